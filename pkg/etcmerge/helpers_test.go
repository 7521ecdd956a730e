package etcmerge

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the trees have entries owned by other users, device nodes and trusted.* xattrs")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// node is what the tests know of one entry of a tree: what Merge compares.
type node struct {
	typ      uint32 // unix.S_IFREG, ...
	perm     uint32
	uid, gid uint32
	data     string // file data or symlink target
	rdev     uint64
	xattrs   string // "name=value" pairs sorted by name, space separated
}

func (n node) String() string {
	s := fmt.Sprintf("%s %04o %d:%d", typeName(n.typ), n.perm, n.uid, n.gid)
	switch n.typ {
	case unix.S_IFREG:
		s += fmt.Sprintf(" %q", n.data)
	case unix.S_IFLNK:
		s += " -> " + n.data
	case unix.S_IFCHR, unix.S_IFBLK:
		s += fmt.Sprintf(" %d,%d", unix.Major(n.rdev), unix.Minor(n.rdev))
	}
	if n.xattrs != "" {
		s += " [" + n.xattrs + "]"
	}
	return s
}

func typeName(typ uint32) string {
	switch typ {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		return "chr"
	case unix.S_IFBLK:
		return "blk"
	case unix.S_IFSOCK:
		return "sock"
	}
	return fmt.Sprintf("type%#o", typ)
}

func file(data string) node      { return node{typ: unix.S_IFREG, perm: 0o644, data: data} }
func dirNode() node              { return node{typ: unix.S_IFDIR, perm: 0o755} }
func symlink(target string) node { return node{typ: unix.S_IFLNK, perm: 0o777, data: target} }
func fifo() node                 { return node{typ: unix.S_IFIFO, perm: 0o644} }
func chr(major, minor uint32) node {
	return node{typ: unix.S_IFCHR, perm: 0o666, rdev: unix.Mkdev(major, minor)}
}
func (n node) mode(perm uint32) node      { n.perm = perm; return n }
func (n node) owner(uid, gid uint32) node { n.uid, n.gid = uid, gid; return n }
func (n node) xattr(xs string) node       { n.xattrs = xs; return n }

// model is a tree: slash-separated paths relative to the root, "." being
// the root.
type model map[string]node

// tree makes a model from path, node pairs; the root is dirNode() unless
// given.
func tree(kv ...any) model {
	m := model{".": dirNode()}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1].(node)
	}
	return m
}

func depth(p string) int {
	if p == "." {
		return 0
	}
	return strings.Count(p, "/") + 1
}

func parent(p string) string { return path.Dir(p) }

// sortedPaths lists the paths of the models, each once, parents first.
func sortedPaths(ms ...model) []string {
	var ps []string
	for _, m := range ms {
		for p := range m {
			ps = append(ps, p)
		}
	}
	slices.SortFunc(ps, func(a, b string) int {
		if d := depth(a) - depth(b); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	return slices.Compact(ps)
}

// build writes m at root (which must not exist) with every time set to
// stamp, so that entries that are the same in two trees differ in time.
func build(t *testing.T, root string, m model, stamp time.Time) {
	t.Helper()
	must(t, os.Mkdir(root, 0o700))
	ps := sortedPaths(m)
	for _, p := range ps {
		n := m[p]
		if p == "." {
			continue
		}
		if pn, ok := m[parent(p)]; !ok || pn.typ != unix.S_IFDIR {
			t.Fatalf("bad model: %s has no parent directory", p)
		}
		fp := filepath.Join(root, p)
		switch n.typ {
		case unix.S_IFDIR:
			must(t, os.Mkdir(fp, 0o700))
		case unix.S_IFREG:
			must(t, os.WriteFile(fp, []byte(n.data), 0o600))
		case unix.S_IFLNK:
			must(t, os.Symlink(n.data, fp))
		default:
			must(t, unix.Mknod(fp, n.typ|0o600, int(n.rdev)))
		}
		if n.typ != unix.S_IFDIR {
			setMeta(t, fp, n, stamp)
		}
	}
	// Directories last, deepest first: creating entries changes mtimes.
	for i := len(ps) - 1; i >= 0; i-- {
		if n := m[ps[i]]; n.typ == unix.S_IFDIR {
			setMeta(t, filepath.Join(root, ps[i]), n, stamp)
		}
	}
}

func setMeta(t *testing.T, p string, n node, stamp time.Time) {
	t.Helper()
	must(t, os.Lchown(p, int(n.uid), int(n.gid)))
	for _, x := range strings.Fields(n.xattrs) {
		name, value, _ := strings.Cut(x, "=")
		must(t, unix.Lsetxattr(p, name, []byte(value), 0))
	}
	if n.typ != unix.S_IFLNK {
		must(t, unix.Chmod(p, n.perm))
	}
	ts := unix.NsecToTimespec(stamp.UnixNano())
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
}

// snapshot reads the tree at root back into a model (no symlink followed),
// and stamps: every path's inode, ctime and mtime, which change if anything
// writes the entry.
func snapshot(t *testing.T, root string) (model, map[string]string) {
	t.Helper()
	m, stamps := model{}, map[string]string{}
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		n := node{typ: st.Mode & unix.S_IFMT, perm: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid}
		switch n.typ {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n.data = string(b)
		case unix.S_IFLNK:
			if n.data, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			n.rdev = st.Rdev
		}
		if n.xattrs, err = xattrString(p); err != nil {
			return err
		}
		m[rel] = n
		stamps[rel] = fmt.Sprintf("ino %d ctime %d mtime %d", st.Ino, st.Ctim.Nano(), st.Mtim.Nano())
		return nil
	})
	must(t, err)
	return m, stamps
}

func xattrString(p string) (string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		return "", err
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return "", err
	}
	var parts []string
	for _, name := range strings.Split(string(buf[:sz]), "\x00") {
		if name == "" || name == selinuxXattr {
			continue
		}
		v := make([]byte, 4096)
		k, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			return "", err
		}
		parts = append(parts, name+"="+string(v[:k]))
	}
	sort.Strings(parts)
	return strings.Join(parts, " "), nil
}

// diffModels reports every path on which want and got differ.
func diffModels(t *testing.T, what string, want, got model) {
	t.Helper()
	for _, p := range sortedPaths(want, got) {
		w, wok := want[p]
		g, gok := got[p]
		switch {
		case !gok:
			t.Errorf("%s: %s: missing, want %v", what, p, w)
		case !wok:
			t.Errorf("%s: %s: %v, want nothing", what, p, g)
		case w != g:
			t.Errorf("%s: %s:\n got  %v\n want %v", what, p, g, w)
		}
	}
}

// diffStamps reports every path that was written between two stamps.
func diffStamps(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, b := range before {
		if a, ok := after[p]; !ok {
			t.Errorf("%s: %s was removed", what, p)
		} else if a != b {
			t.Errorf("%s: %s was written: %s, was %s", what, p, a, b)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s was created", what, p)
		}
	}
}

// source says which tree the result's entry at a path comes from.
type source int

const (
	none source = iota
	fromCur
	fromNew
)

// oracle computes, from the models alone and independently of Merge, the
// merged tree and the stats: first each path's rule on its own, then the
// two structural consequences (ancestors of an admin's entry are
// directories; nothing lies below a non-directory or an absent path).
func oracle(o, c, n model) (model, Stats) {
	paths := sortedPaths(o, c, n)
	from := map[string]source{}
	var admin []string
	for _, p := range paths {
		on, ook := o[p]
		cn, cok := c[p]
		_, nok := n[p]
		switch {
		case cok && (!ook || on != cn): // changed or added by the admin
			from[p] = fromCur
			admin = append(admin, p)
		case cok || !ook: // left alone, or a new default
			from[p] = none
			if nok {
				from[p] = fromNew
			}
		default: // deleted by the admin
			from[p] = none
		}
	}
	isDirFrom := func(p string) bool {
		switch from[p] {
		case fromCur:
			return c[p].typ == unix.S_IFDIR
		case fromNew:
			return n[p].typ == unix.S_IFDIR
		}
		return false
	}
	forced := map[string]bool{}
	for _, p := range admin {
		for q := p; q != "."; {
			q = parent(q)
			if !isDirFrom(q) {
				from[q] = fromCur
				forced[q] = true
			}
		}
	}
	res := model{}
	for _, p := range paths {
		if p != "." {
			if par, ok := res[parent(p)]; !ok || par.typ != unix.S_IFDIR {
				continue
			}
		}
		switch from[p] {
		case fromCur:
			res[p] = c[p]
		case fromNew:
			res[p] = n[p]
		}
	}
	var s Stats
	for _, p := range paths {
		on, ook := o[p]
		cn, cok := c[p]
		nn, nok := n[p]
		rn, rok := res[p]
		switch {
		case cok && !ook:
			s.Added++
		case cok && on != cn:
			s.AdminKept++
		case ook && !cok:
			if nok {
				s.Deleted++
			}
		default: // left alone
			newDiffers := nok != cok || nn != cn
			taken := rok == nok && rn == nn
			if !forced[p] && newDiffers && taken {
				s.DefaultsTaken++
			}
		}
	}
	return res, s
}

// sentinel makes a directory outside the trees that symlinks in them point
// to; nothing may write it.
func sentinel(t *testing.T, p string) func() map[string]string {
	t.Helper()
	build(t, p, tree(
		"a", file("sentinel"),
		"b", dirNode(),
		"b/x", file("sentinel"),
		"c", file("sentinel"),
		"d", dirNode(),
	), time.Unix(1e9, 0))
	return func() map[string]string {
		_, stamps := snapshot(t, p)
		return stamps
	}
}
