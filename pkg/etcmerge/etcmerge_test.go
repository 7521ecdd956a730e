package etcmerge

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type mergeCase struct {
	name    string
	o, c, n model // oldDefault, current, newDefault
	// want says where each path of the result comes from; the root is
	// newDefault's unless given.
	want  map[string]source
	stats Stats
}

// mergeCases covers every rule; sent is the sentinel directory outside
// the trees, two levels above their top-level entries.
func mergeCases(sent string) []mergeCase {
	return []mergeCase{{
		name:  "admin-modified file keeps the admin's content",
		o:     tree("f", file("default"), "g", file("default")),
		c:     tree("f", file("admin"), "g", file("Default")),
		n:     tree("f", file("new default"), "g", file("new default")),
		want:  map[string]source{"f": fromCur, "g": fromCur},
		stats: Stats{AdminKept: 2},
	}, {
		name:  "large files compared whole",
		o:     tree("f", file(strings.Repeat("x", 200<<10))),
		c:     tree("f", file(strings.Repeat("x", 200<<10-1)+"y")),
		n:     tree("f", file("new default")),
		want:  map[string]source{"f": fromCur},
		stats: Stats{AdminKept: 1},
	}, {
		name:  "untouched file takes the new default",
		o:     tree("f", file("default")),
		c:     tree("f", file("default")),
		n:     tree("f", file("new default").mode(0o600)),
		want:  map[string]source{"f": fromNew},
		stats: Stats{DefaultsTaken: 1},
	}, {
		name: "untouched and unchanged (times differ, and are ignored)",
		o:    tree("f", file("default"), "d", dirNode(), "l", symlink("f")),
		c:    tree("f", file("default"), "d", dirNode(), "l", symlink("f")),
		n:    tree("f", file("default"), "d", dirNode(), "l", symlink("f")),
		want: map[string]source{"f": fromNew, "d": fromNew, "l": fromNew},
	}, {
		name:  "admin-deleted file stays deleted though the new default changed it",
		o:     tree("f", file("default"), "g", file("g")),
		c:     tree("g", file("g")),
		n:     tree("f", file("new default"), "g", file("g")),
		want:  map[string]source{"g": fromNew},
		stats: Stats{Deleted: 1},
	}, {
		name:  "admin-deleted file the new default dropped too",
		o:     tree("f", file("default")),
		c:     tree(),
		n:     tree(),
		want:  map[string]source{},
		stats: Stats{},
	}, {
		name:  "new default appears",
		o:     tree(),
		c:     tree(),
		n:     tree("f", file("new"), "d", dirNode(), "d/x", file("x")),
		want:  map[string]source{"f": fromNew, "d": fromNew, "d/x": fromNew},
		stats: Stats{DefaultsTaken: 3},
	}, {
		name:  "untouched file the new default removed stays removed",
		o:     tree("f", file("default")),
		c:     tree("f", file("default")),
		n:     tree(),
		want:  map[string]source{},
		stats: Stats{DefaultsTaken: 1},
	}, {
		name:  "admin-added file kept",
		o:     tree(),
		c:     tree("f", file("admin")),
		n:     tree(),
		want:  map[string]source{"f": fromCur},
		stats: Stats{Added: 1},
	}, {
		name:  "admin-added file wins over a new default of the same name",
		o:     tree(),
		c:     tree("f", file("admin")),
		n:     tree("f", file("new default")),
		want:  map[string]source{"f": fromCur},
		stats: Stats{Added: 1},
	}, {
		name:  "admin-added file replaces a new default directory",
		o:     tree(),
		c:     tree("f", file("admin")),
		n:     tree("f", dirNode(), "f/x", file("x")),
		want:  map[string]source{"f": fromCur},
		stats: Stats{Added: 1},
	}, {
		name:  "admin turned a file into a directory",
		o:     tree("f", file("default")),
		c:     tree("f", dirNode().mode(0o750), "f/x", file("admin")),
		n:     tree("f", file("new default")),
		want:  map[string]source{"f": fromCur, "f/x": fromCur},
		stats: Stats{AdminKept: 1, Added: 1},
	}, {
		name:  "admin turned a directory into a file",
		o:     tree("d", dirNode(), "d/x", file("x")),
		c:     tree("d", file("admin")),
		n:     tree("d", dirNode(), "d/x", file("x2"), "d/y", file("y"), "d/e", dirNode(), "d/e/z", file("z")),
		want:  map[string]source{"d": fromCur},
		stats: Stats{AdminKept: 1, Deleted: 1},
	}, {
		name:  "new default turned a file into a directory",
		o:     tree("f", file("default")),
		c:     tree("f", file("default")),
		n:     tree("f", dirNode(), "f/x", file("x")),
		want:  map[string]source{"f": fromNew, "f/x": fromNew},
		stats: Stats{DefaultsTaken: 2},
	}, {
		name:  "new default turned a directory into a file",
		o:     tree("d", dirNode(), "d/x", file("x")),
		c:     tree("d", dirNode(), "d/x", file("x")),
		n:     tree("d", file("new default")),
		want:  map[string]source{"d": fromNew},
		stats: Stats{DefaultsTaken: 2},
	}, {
		name:  "admin mode change keeps the admin's whole entry, content too",
		o:     tree("f", file("default")),
		c:     tree("f", file("default").mode(0o600)),
		n:     tree("f", file("new default")),
		want:  map[string]source{"f": fromCur},
		stats: Stats{AdminKept: 1},
	}, {
		name:  "admin setuid bit kept",
		o:     tree("f", file("default").mode(0o755).owner(1000, 1000)),
		c:     tree("f", file("default").mode(0o4755).owner(1000, 1000)),
		n:     tree("f", file("new default").mode(0o755)),
		want:  map[string]source{"f": fromCur},
		stats: Stats{AdminKept: 1},
	}, {
		name:  "admin owner change keeps the admin's whole entry",
		o:     tree("f", file("default"), "g", file("g")),
		c:     tree("f", file("default").owner(1000, 0), "g", file("g").owner(0, 1000)),
		n:     tree("f", file("new default"), "g", file("new g")),
		want:  map[string]source{"f": fromCur, "g": fromCur},
		stats: Stats{AdminKept: 2},
	}, {
		name:  "admin xattr change counts as a change",
		o:     tree("f", file("default").xattr("user.a=1"), "g", file("g"), "h", file("h").xattr("user.a=1")),
		c:     tree("f", file("default").xattr("user.a=2"), "g", file("g").xattr("user.b=1"), "h", file("h")),
		n:     tree("f", file("new default").xattr("user.a=1"), "g", file("new g"), "h", file("new h").xattr("user.a=1 user.c=3")),
		want:  map[string]source{"f": fromCur, "g": fromCur, "h": fromCur},
		stats: Stats{AdminKept: 3},
	}, {
		name:  "untouched xattrs take the new default's",
		o:     tree("f", file("default").xattr("user.a=1")),
		c:     tree("f", file("default").xattr("user.a=1")),
		n:     tree("f", file("default").xattr("user.a=2 user.b=1")),
		want:  map[string]source{"f": fromNew},
		stats: Stats{DefaultsTaken: 1},
	}, {
		name:  "admin symlink retarget kept",
		o:     tree("l", symlink("default")),
		c:     tree("l", symlink("admin")),
		n:     tree("l", symlink("new default")),
		want:  map[string]source{"l": fromCur},
		stats: Stats{AdminKept: 1},
	}, {
		name: "symlinks pointing outside are copied verbatim",
		o:    tree("d", dirNode()),
		c: tree(
			"passwd", symlink("/etc/passwd"),
			"up", symlink("../../.."),
			"abs", symlink(sent),
			"rel", symlink("../../sentinel"),
			"d", dirNode(),
			"d/a", symlink("../../../sentinel/a"),
			"d/b", symlink(filepath.Join(sent, "b")),
		),
		n: tree("d", dirNode()),
		want: map[string]source{
			"passwd": fromCur, "up": fromCur, "abs": fromCur, "rel": fromCur,
			"d": fromNew, "d/a": fromCur, "d/b": fromCur,
		},
		stats: Stats{Added: 6},
	}, {
		name:  "admin replaced a directory with a symlink to one outside",
		o:     tree("b", dirNode(), "b/x", file("x")),
		c:     tree("b", symlink(filepath.Join(sent, "b"))),
		n:     tree("b", dirNode(), "b/x", file("x2"), "b/y", file("y")),
		want:  map[string]source{"b": fromCur},
		stats: Stats{AdminKept: 1, Deleted: 1},
	}, {
		name:  "new default symlink to a directory outside, where the admin added a directory",
		o:     tree(),
		c:     tree("b", dirNode(), "b/x", file("admin"), "d", dirNode(), "d/a", file("admin")),
		n:     tree("b", symlink(filepath.Join(sent, "b")), "d", symlink("../../sentinel/d")),
		want:  map[string]source{"b": fromCur, "b/x": fromCur, "d": fromCur, "d/a": fromCur},
		stats: Stats{Added: 4},
	}, {
		name:  "new default symlink to outside where an untouched directory holds an admin's change",
		o:     tree("b", dirNode(), "b/x", file("x")),
		c:     tree("b", dirNode(), "b/x", file("admin")),
		n:     tree("b", symlink(filepath.Join(sent, "b"))),
		want:  map[string]source{"b": fromCur, "b/x": fromCur},
		stats: Stats{AdminKept: 1},
	}, {
		name:  "admin deleted a symlink the new default retargeted",
		o:     tree("l", symlink("/etc/passwd")),
		c:     tree(),
		n:     tree("l", symlink(sent)),
		want:  map[string]source{},
		stats: Stats{Deleted: 1},
	}, {
		name: "nested directories",
		o:    tree("a", dirNode(), "a/b", dirNode(), "a/b/c", file("c"), "a/b/d", file("d")),
		c:    tree("a", dirNode(), "a/b", dirNode(), "a/b/c", file("admin"), "a/b/d", file("d")),
		n: tree("a", dirNode(), "a/b", dirNode().mode(0o700), "a/b/c", file("c2"), "a/b/d", file("d2"),
			"a/b/e", file("e")),
		want: map[string]source{
			"a": fromNew, "a/b": fromNew, "a/b/c": fromCur, "a/b/d": fromNew, "a/b/e": fromNew,
		},
		stats: Stats{AdminKept: 1, DefaultsTaken: 3},
	}, {
		name: "untouched directory the new default removed keeps the admin's changes in it",
		o:    tree("d", dirNode(), "d/e", dirNode(), "d/e/x", file("x"), "d/y", file("y"), "d/z", file("z")),
		c: tree("d", dirNode(), "d/e", dirNode(), "d/e/x", file("admin"), "d/y", file("y"),
			"d/w", file("added")),
		n:     tree(),
		want:  map[string]source{"d": fromCur, "d/e": fromCur, "d/e/x": fromCur, "d/w": fromCur},
		stats: Stats{AdminKept: 1, Added: 1, DefaultsTaken: 1},
	}, {
		name:  "untouched directory the new default made a file keeps the admin's changes in it",
		o:     tree("d", dirNode(), "d/x", file("x"), "d/y", file("y")),
		c:     tree("d", dirNode(), "d/x", file("admin"), "d/y", file("y")),
		n:     tree("d", file("new default")),
		want:  map[string]source{"d": fromCur, "d/x": fromCur},
		stats: Stats{AdminKept: 1, DefaultsTaken: 1},
	}, {
		name:  "admin directory mode change kept, its contents merged",
		o:     tree("d", dirNode(), "d/x", file("x"), "d/y", file("y")),
		c:     tree("d", dirNode().mode(0o700), "d/x", file("x"), "d/y", file("y")),
		n:     tree("d", dirNode().xattr("user.n=1"), "d/x", file("x2"), "d/z", file("z")),
		want:  map[string]source{"d": fromCur, "d/x": fromNew, "d/z": fromNew},
		stats: Stats{AdminKept: 1, DefaultsTaken: 3},
	}, {
		name:  "admin directory owner change kept where the new default removed it",
		o:     tree("d", dirNode(), "d/x", file("x")),
		c:     tree("d", dirNode().owner(1000, 1000), "d/x", file("x")),
		n:     tree(),
		want:  map[string]source{"d": fromCur},
		stats: Stats{AdminKept: 1, DefaultsTaken: 1},
	}, {
		name:  "admin root mode change kept",
		o:     tree("f", file("f")),
		c:     tree("f", file("f")).with(".", dirNode().mode(0o750)),
		n:     tree("f", file("f")),
		want:  map[string]source{".": fromCur, "f": fromNew},
		stats: Stats{AdminKept: 1},
	}, {
		name:  "new default root mode taken",
		o:     tree(),
		c:     tree(),
		n:     tree().with(".", dirNode().mode(0o700)),
		want:  map[string]source{},
		stats: Stats{DefaultsTaken: 1},
	}, {
		name: "admin-added directory copied whole",
		o:    tree(),
		c: tree("d", dirNode().mode(0o700).xattr("user.d=1"), "d/x", file("x"), "d/e", dirNode(),
			"d/e/l", symlink("../x"), "d/e/p", fifo()),
		n: tree(),
		want: map[string]source{
			"d": fromCur, "d/x": fromCur, "d/e": fromCur, "d/e/l": fromCur, "d/e/p": fromCur,
		},
		stats: Stats{Added: 5},
	}, {
		name:  "admin-added directory merged with a new default directory of the same name",
		o:     tree(),
		c:     tree("d", dirNode().mode(0o700), "d/x", file("admin")),
		n:     tree("d", dirNode(), "d/x", file("new default"), "d/y", file("y")),
		want:  map[string]source{"d": fromCur, "d/x": fromCur, "d/y": fromNew},
		stats: Stats{Added: 2, DefaultsTaken: 1},
	}, {
		name:  "admin-deleted directory stays deleted, new defaults in it too",
		o:     tree("d", dirNode(), "d/x", file("x"), "d/e", dirNode()),
		c:     tree(),
		n:     tree("d", dirNode(), "d/x", file("x2"), "d/y", file("new"), "d/e", dirNode()),
		want:  map[string]source{},
		stats: Stats{Deleted: 3},
	}, {
		name: "device nodes and fifos copied",
		o:    tree("null", chr(1, 3)),
		c: tree("null", chr(1, 5), "zero", chr(1, 5).mode(0o600).owner(1000, 0), "p", fifo().mode(0o600),
			"s", node{typ: unix.S_IFSOCK, perm: 0o755}, "loop", node{typ: unix.S_IFBLK, perm: 0o660, rdev: unix.Mkdev(7, 0)}),
		n:     tree("null", chr(1, 7), "p", file("p")),
		want:  map[string]source{"null": fromCur, "zero": fromCur, "p": fromCur, "s": fromCur, "loop": fromCur},
		stats: Stats{AdminKept: 1, Added: 4},
	}, {
		name: "trusted xattrs on symlinks and devices count",
		o:    tree("l", symlink("x"), "c", chr(1, 3)),
		c:    tree("l", symlink("x").xattr("trusted.t=1"), "c", chr(1, 3).xattr("trusted.t=1")),
		n:    tree("l", symlink("y"), "c", chr(1, 3).xattr("trusted.u=2")),
		want: map[string]source{"l": fromCur, "c": fromCur},

		stats: Stats{AdminKept: 2},
	}}
}

func (m model) with(p string, n node) model { m[p] = n; return m }

func TestMergeRules(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	sent := filepath.Join(dir, "sentinel")
	sentStamps := sentinel(t, sent)
	sentBefore := sentStamps()
	for i, tc := range mergeCases(sent) {
		t.Run(tc.name, func(t *testing.T) {
			want := model{".": tc.n["."]}
			for p, src := range tc.want {
				switch src {
				case fromCur:
					want[p] = tc.c[p]
				case fromNew:
					want[p] = tc.n[p]
				}
			}
			oracleTree, oracleStats := oracle(tc.o, tc.c, tc.n)
			diffModels(t, "oracle", want, oracleTree)
			if oracleStats != tc.stats {
				t.Errorf("oracle: stats %+v, want %+v", oracleStats, tc.stats)
			}

			base := filepath.Join(dir, fmt.Sprint(i))
			must(t, os.Mkdir(base, 0o755))
			got, stats := runMerge(t, base, tc.o, tc.c, tc.n)
			diffModels(t, "merge", want, got)
			if stats != tc.stats {
				t.Errorf("stats %+v, want %+v", stats, tc.stats)
			}
			diffStamps(t, "sentinel", sentBefore, sentStamps())
		})
	}
}

// runMerge builds the three trees in base, merges them and returns the
// result; it fails t if Merge wrote anything outside newDefault.
func runMerge(t *testing.T, base string, o, c, n model) (model, Stats) {
	t.Helper()
	old, cur, nw := filepath.Join(base, "old"), filepath.Join(base, "cur"), filepath.Join(base, "new")
	build(t, old, o, time.Unix(1.1e9, 0))
	build(t, cur, c, time.Unix(1.2e9, 0))
	build(t, nw, n, time.Unix(1.3e9, 0))
	_, oldBefore := snapshot(t, old)
	_, curBefore := snapshot(t, cur)
	stats, err := Merge(old, cur, nw)
	if err != nil {
		t.Fatal(err)
	}
	_, oldAfter := snapshot(t, old)
	_, curAfter := snapshot(t, cur)
	diffStamps(t, "oldDefault", oldBefore, oldAfter)
	diffStamps(t, "current", curBefore, curAfter)
	got, _ := snapshot(t, nw)
	return got, stats
}

// TestCopiesAreCopies checks that the result shares no inode with current
// and that names hardlinked in current become separate files.
func TestCopiesAreCopies(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	old, cur, nw := filepath.Join(base, "old"), filepath.Join(base, "cur"), filepath.Join(base, "new")
	build(t, old, tree(), time.Unix(1e9, 0))
	build(t, cur, tree("a", file("admin")), time.Unix(1e9, 0))
	build(t, nw, tree(), time.Unix(1e9, 0))
	must(t, os.Link(filepath.Join(cur, "a"), filepath.Join(cur, "b")))
	stats, err := Merge(old, cur, nw)
	must(t, err)
	if stats != (Stats{Added: 2}) {
		t.Errorf("stats %+v", stats)
	}
	var ca, na, nb unix.Stat_t
	must(t, unix.Lstat(filepath.Join(cur, "a"), &ca))
	must(t, unix.Lstat(filepath.Join(nw, "a"), &na))
	must(t, unix.Lstat(filepath.Join(nw, "b"), &nb))
	if na.Ino == ca.Ino || nb.Ino == ca.Ino || na.Ino == nb.Ino || na.Nlink != 1 || nb.Nlink != 1 {
		t.Errorf("result shares inodes: current %d, result %d (nlink %d) and %d (nlink %d)",
			ca.Ino, na.Ino, na.Nlink, nb.Ino, nb.Nlink)
	}
	if na.Mtim != ca.Mtim {
		t.Errorf("copy has mtime %v, current %v", na.Mtim, ca.Mtim)
	}
}

func TestBadInput(t *testing.T) {
	base := t.TempDir()
	old, cur, nw := filepath.Join(base, "old"), filepath.Join(base, "cur"), filepath.Join(base, "new")
	for _, d := range []string{old, cur, nw} {
		must(t, os.Mkdir(d, 0o755))
	}
	inner := filepath.Join(cur, "x", "new")
	must(t, os.MkdirAll(inner, 0o755))
	must(t, os.Symlink(nw, filepath.Join(base, "link")))
	for _, tc := range []struct {
		name          string
		o, c, n, path string
		overlap       bool
	}{
		{name: "missing oldDefault", o: filepath.Join(base, "nope"), c: cur, n: nw, path: filepath.Join(base, "nope")},
		{name: "newDefault is a symlink", o: old, c: cur, n: filepath.Join(base, "link"), path: filepath.Join(base, "link")},
		{name: "newDefault is current", o: old, c: cur, n: cur, path: cur, overlap: true},
		{name: "newDefault inside current", o: old, c: cur, n: inner, path: inner, overlap: true},
		{name: "current inside newDefault", o: old, c: inner, n: cur, path: cur, overlap: true},
		{name: "newDefault inside oldDefault", o: cur, c: old, n: inner, path: inner, overlap: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Merge(tc.o, tc.c, tc.n)
			var me *Error
			if !errors.As(err, &me) || !strings.HasPrefix(me.Path, tc.path) {
				t.Fatalf("error %v, want an *Error about %s", err, tc.path)
			}
			if errors.Is(err, ErrOverlap) != tc.overlap {
				t.Errorf("error %v: overlap %v, want %v", err, !tc.overlap, tc.overlap)
			}
			if !strings.Contains(err.Error(), me.Path) {
				t.Errorf("error %q does not name %s", err, me.Path)
			}
		})
	}
}

// TestErrorNamesPath makes a removal fail inside newDefault (an immutable
// file) and checks that the error names it.
func TestErrorNamesPath(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	old, cur, nw := filepath.Join(base, "old"), filepath.Join(base, "cur"), filepath.Join(base, "new")
	build(t, old, tree("d", dirNode(), "d/f", file("default")), time.Unix(1e9, 0))
	build(t, cur, tree("d", dirNode(), "d/f", file("admin")), time.Unix(1e9, 0))
	build(t, nw, tree("d", dirNode(), "d/f", file("new")), time.Unix(1e9, 0))
	victim := filepath.Join(nw, "d", "f")
	if !setImmutable(t, victim, true) {
		t.Skip("the filesystem of the temporary directory has no immutable flag")
	}
	defer setImmutable(t, victim, false)
	_, err := Merge(old, cur, nw)
	var me *Error
	if !errors.As(err, &me) || me.Path != victim || !errors.Is(err, unix.EPERM) {
		t.Fatalf("error %v, want EPERM about %s", err, victim)
	}
}

func setImmutable(t *testing.T, p string, on bool) bool {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	must(t, err)
	defer unix.Close(fd)
	flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return false
	}
	if on {
		flags |= fsImmutableFl
	} else {
		flags &^= fsImmutableFl
	}
	return unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags)) == nil
}

func TestStatsString(t *testing.T) {
	got := Stats{AdminKept: 3, Deleted: 2, DefaultsTaken: 12, Added: 1}.String()
	if want := "admin kept 3, added 1, deleted 2, defaults taken 12"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// fsImmutableFl is FS_IMMUTABLE_FL of linux/fs.h (chattr +i).
const fsImmutableFl = 0x10
