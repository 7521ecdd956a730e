package deploy

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// render lists a tree compactly: "a/" for a directory, "a=content" for a
// file, "a->target" for a symlink, "a?" for anything else.
func render(t *testing.T, root string) string {
	t.Helper()
	var out []string
	fd, err := unix.Open(root, openDir, 0)
	must(t, err)
	defer unix.Close(fd)
	walkFd(t, fd, "", func(dirfd int, name, rel string, st *unix.Stat_t) {
		rel = rel[1:]
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			out = append(out, rel+"/")
		case unix.S_IFREG:
			b, err := os.ReadFile(procPath(dirfd, name))
			must(t, err)
			out = append(out, rel+"="+string(b))
		case unix.S_IFLNK:
			target, err := readlinkat(dirfd, name)
			must(t, err)
			out = append(out, rel+"->"+target)
		default:
			out = append(out, rel+"?")
		}
	})
	sort.Strings(out)
	return strings.Join(out, " ")
}

func TestMergeRules(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name   string
		layers func(l1, l2, l3 layer)
		want   string
	}{{
		name: "upper file hides lower file",
		layers: func(l1, l2, l3 layer) {
			l1.file("a", "1").file("b", "1")
			l3.file("a", "3")
		},
		want: "a=3 b=1",
	}, {
		name: "whiteouts hide files and directories and are not shown",
		layers: func(l1, l2, l3 layer) {
			l1.file("f", "1").file("d/x", "1").file("d2/x", "1")
			l2.whiteout("f").whiteout("d").whiteout("d2").whiteout("nothing")
			l3.file("d2/y", "3")
		},
		want: "d2/ d2/y=3",
	}, {
		name: "opaque directory hides lower contents, not upper ones",
		layers: func(l1, l2, l3 layer) {
			l1.file("d/a", "1").file("d/sub/s", "1")
			l2.dir("d", 0o755).opaque("d").file("d/b", "2")
			l3.file("d/c", "3")
		},
		want: "d/ d/b=2 d/c=3",
	}, {
		name: "user.overlay.opaque counts too",
		layers: func(l1, l2, l3 layer) {
			l1.file("d/a", "1")
			l2.dir("d", 0o755).xattr("d", "user.overlay.opaque", "y").file("d/b", "2")
		},
		want: "d/ d/b=2",
	}, {
		name: "opaque value other than y is not opaque",
		layers: func(l1, l2, l3 layer) {
			l1.file("d/a", "1")
			l2.dir("d", 0o755).xattr("d", "trusted.overlay.opaque", "n")
		},
		want: "d/ d/a=1",
	}, {
		name: "AUFS whiteouts and opaque markers",
		layers: func(l1, l2, l3 layer) {
			l1.file("f", "1").file("d/a", "1").file("o/a", "1").file("keep", "1")
			l2.file(".wh.f", "").file("d/.wh.a", "").file("o/.wh..wh..opq", "").file("o/b", "2").
				file(".wh..wh.plnk/x", "")
		},
		want: "d/ keep=1 o/ o/b=2",
	}, {
		name: "root is never opaque",
		layers: func(l1, l2, l3 layer) {
			l1.file("a", "1")
			l2.opaque(".").file(".wh..wh..opq", "").file("b", "2")
		},
		want: "a=1 b=2",
	}, {
		name: "directory over file, file over directory",
		layers: func(l1, l2, l3 layer) {
			l1.file("x", "1").file("y/a", "1")
			l2.file("x/a", "2").file("y", "2")
		},
		want: "x/ x/a=2 y=2",
	}, {
		name: "lower non-directory ends a merge",
		layers: func(l1, l2, l3 layer) {
			l1.file("d/a", "1")
			l2.symlink("d", "/etc")
			l3.file("d/b", "3")
		},
		want: "d/ d/b=3",
	}, {
		name: "symlinks are verbatim",
		layers: func(l1, l2, l3 layer) {
			l1.symlink("abs", "/etc/passwd").symlink("up", "../../..").symlink("dangling", "nope").
				symlink("d", "..")
			l3.symlink("d/x", "y")
		},
		want: "abs->/etc/passwd d/ d/x->y dangling->nope up->../../..",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l1, l2, l3 := newLayer(t, dir, "L1"), newLayer(t, dir, "L2"), newLayer(t, dir, "L3")
			tc.layers(l1, l2, l3)
			dst := filepath.Join(dir, "out", "dst")
			must(t, os.MkdirAll(filepath.Dir(dst), 0o755))
			if _, err := Build(context.Background(), []string{l1.root, l2.root, l3.root}, dst, Options{}); err != nil {
				t.Fatal(err)
			}
			if got := render(t, dst); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// An inode with names inside and outside /etc becomes two inodes: the /etc
// names are copied, the others share the layer's inode.
func TestHardlinkAcrossMutablePrefix(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	l1 := newLayer(t, dir, "L1").file("usr/a", "shared").link(filepath.Join(dir, "L1/usr/a"), "usr/b").
		link(filepath.Join(dir, "L1/usr/a"), "etc/c").link(filepath.Join(dir, "L1/usr/a"), "etc/d")
	dst := filepath.Join(dir, "dst")
	c := &linkCloner{}
	res, err := Build(context.Background(), []string{l1.root}, dst, Options{Cloner: c})
	must(t, err)
	s := snapshot(t, dst, false)
	layerIno := snapshot(t, l1.root, false)["/usr/a"].ino
	if s["/usr/a"].ino != layerIno || s["/usr/b"].Group != "/usr/a" {
		t.Errorf("/usr names do not share the layer inode: %+v %+v", s["/usr/a"], s["/usr/b"])
	}
	if s["/etc/c"].ino == layerIno || s["/etc/d"].Group != "/etc/c" {
		t.Errorf("/etc names: %+v %+v", s["/etc/c"], s["/etc/d"])
	}
	if res.Files != 2 || res.Hardlinks != 2 || res.Shared != 1 || c.calls.Load() != 1 {
		t.Errorf("result %+v, cloner calls %d", *res, c.calls.Load())
	}
}

func TestMutablePrefixes(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	l1 := newLayer(t, dir, "L1").file("etc/a", "a").file("var/lib/b", "b").file("var/libx", "c")
	for _, tc := range []struct {
		prefixes []string
		links    int64
	}{{nil, 2}, {[]string{}, 3}, {[]string{"/var/lib/"}, 2}, {[]string{"/"}, 0}} {
		c := &linkCloner{}
		dst := filepath.Join(dir, "dst")
		if _, err := Build(context.Background(), []string{l1.root}, dst, Options{Cloner: c, MutablePrefixes: tc.prefixes}); err != nil {
			t.Fatal(err)
		}
		if c.links.Load() != tc.links {
			t.Errorf("prefixes %q: %d files shared, want %d", tc.prefixes, c.links.Load(), tc.links)
		}
		must(t, os.RemoveAll(dst))
	}
	if _, err := Build(context.Background(), []string{l1.root}, filepath.Join(dir, "x"), Options{MutablePrefixes: []string{"etc"}}); err == nil {
		t.Error("relative prefix accepted")
	}
}

func TestCopyKeepsHoles(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	l1 := newLayer(t, dir, "L1")
	f, err := os.Create(l1.p("sparse"))
	must(t, err)
	must(t, f.Truncate(64<<20))
	_, err = f.WriteAt([]byte("data"), 32<<20)
	must(t, err)
	must(t, f.Close())
	dst := filepath.Join(dir, "dst")
	_, err = Build(context.Background(), []string{l1.root}, dst, Options{})
	must(t, err)
	var st unix.Stat_t
	must(t, unix.Stat(filepath.Join(dst, "sparse"), &st))
	if st.Size != 64<<20 || st.Blocks*512 > 1<<20 {
		t.Errorf("size %d, %d bytes allocated", st.Size, st.Blocks*512)
	}
	b, err := os.ReadFile(filepath.Join(dst, "sparse"))
	must(t, err)
	if string(b[32<<20:32<<20+4]) != "data" {
		t.Error("data lost")
	}
}
