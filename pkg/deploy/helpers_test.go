package deploy

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: whiteouts are device nodes, opaque markers trusted.* xattrs, and Build chowns")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// layer writes one layer directory for tests; paths are relative to it.
type layer struct {
	t    *testing.T
	root string
}

func newLayer(t *testing.T, dir, name string) layer {
	t.Helper()
	root := filepath.Join(dir, name)
	must(t, os.MkdirAll(root, 0o755))
	return layer{t, root}
}

func (l layer) p(rel string) string { return filepath.Join(l.root, rel) }

func (l layer) mkparent(rel string) {
	l.t.Helper()
	must(l.t, os.MkdirAll(filepath.Dir(l.p(rel)), 0o755))
}

func (l layer) dir(rel string, mode os.FileMode) layer {
	l.t.Helper()
	must(l.t, os.MkdirAll(l.p(rel), 0o755))
	must(l.t, os.Chmod(l.p(rel), mode))
	return l
}

func (l layer) file(rel, content string) layer {
	l.t.Helper()
	l.mkparent(rel)
	must(l.t, os.WriteFile(l.p(rel), []byte(content), 0o644))
	return l
}

func (l layer) whiteout(rel string) layer {
	l.t.Helper()
	l.mkparent(rel)
	must(l.t, unix.Mknod(l.p(rel), unix.S_IFCHR, 0))
	return l
}

func (l layer) opaque(rel string) layer {
	l.t.Helper()
	must(l.t, unix.Setxattr(l.p(rel), "trusted.overlay.opaque", []byte("y"), 0))
	return l
}

func (l layer) symlink(rel, target string) layer {
	l.t.Helper()
	l.mkparent(rel)
	must(l.t, os.Symlink(target, l.p(rel)))
	return l
}

// link makes rel another name of old; old may be in another layer.
func (l layer) link(old, rel string) layer {
	l.t.Helper()
	l.mkparent(rel)
	must(l.t, unix.Linkat(unix.AT_FDCWD, old, unix.AT_FDCWD, l.p(rel), 0))
	return l
}

func (l layer) own(rel string, uid, gid int, mode uint32) layer {
	l.t.Helper()
	must(l.t, os.Lchown(l.p(rel), uid, gid))
	must(l.t, unix.Chmod(l.p(rel), mode))
	return l
}

func (l layer) xattr(rel, name, value string) layer {
	l.t.Helper()
	must(l.t, unix.Lsetxattr(l.p(rel), name, []byte(value), 0))
	return l
}

func (l layer) mknod(rel string, mode uint32, dev int) layer {
	l.t.Helper()
	l.mkparent(rel)
	must(l.t, unix.Mknod(l.p(rel), mode, dev))
	return l
}

// entry is what the tests compare of one path of a tree.
type entry struct {
	Type, Perm uint32
	UID, GID   uint32
	Size       int64 // regular files and symlinks only
	Rdev       uint64
	Mtime      int64
	Target     string
	Sum        string
	Xattrs     string // sorted name=hexvalue, space separated
	Group      string // smallest path sharing this non-directory's inode, "" if none
	dev, ino   uint64
}

// snapshot walks root through directory file descriptors (no PATH_MAX limit,
// no symlink followed) and describes every path, "/" being root itself.
// withPrivate keeps trusted.overlay.* xattrs.
func snapshot(t *testing.T, root string, withPrivate bool) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	fd, err := unix.Open(root, openDir, 0)
	must(t, err)
	defer unix.Close(fd)
	var rootSt unix.Stat_t
	must(t, unix.Fstat(fd, &rootSt))
	out["/"] = describe(t, fd, "", &rootSt, withPrivate)
	walkFd(t, fd, "", func(dirfd int, name, rel string, st *unix.Stat_t) {
		out[rel] = describe(t, dirfd, name, st, withPrivate)
	})
	groups := map[[2]uint64][]string{}
	for p, e := range out {
		if e.Type != unix.S_IFDIR {
			groups[[2]uint64{e.dev, e.ino}] = append(groups[[2]uint64{e.dev, e.ino}], p)
		}
	}
	for _, paths := range groups {
		if len(paths) > 1 {
			sort.Strings(paths)
			for _, p := range paths {
				e := out[p]
				e.Group = paths[0]
				out[p] = e
			}
		}
	}
	return out
}

// walkFd calls fn for every entry below the directory fd, parents first.
func walkFd(t *testing.T, fd int, rel string, fn func(dirfd int, name, rel string, st *unix.Stat_t)) {
	t.Helper()
	names, err := readNames(fd)
	must(t, err)
	for _, name := range names {
		var st unix.Stat_t
		err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == unix.ENOENT {
			// overlayfs passes readdir of a directory that only one layer
			// has straight to that layer, whiteouts included, but a
			// lookup of such a whiteout fails: the name is not there.
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", rel+"/"+name, err)
		}
		fn(fd, name, rel+"/"+name, &st)
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			cfd, err := unix.Openat(fd, name, openDir, 0)
			must(t, err)
			walkFd(t, cfd, rel+"/"+name, fn)
			unix.Close(cfd)
		}
	}
}

// describe describes name in dirfd, or dirfd itself when name is "".
func describe(t *testing.T, dirfd int, name string, st *unix.Stat_t, withPrivate bool) entry {
	t.Helper()
	e := entry{
		Type: st.Mode & unix.S_IFMT, Perm: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid,
		Rdev: uint64(st.Rdev), Mtime: st.Mtim.Nano(), dev: uint64(st.Dev), ino: st.Ino,
	}
	path := procPath(dirfd, name)
	if name == "" {
		path = procPath(dirfd, ".")
	}
	switch e.Type {
	case unix.S_IFREG:
		e.Size = st.Size
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		must(t, err)
		f := os.NewFile(uintptr(fd), name)
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		must(t, err)
		e.Sum = hex.EncodeToString(h.Sum(nil))
	case unix.S_IFLNK:
		e.Size = st.Size
		target, err := readlinkat(dirfd, name)
		must(t, err)
		e.Target = target
	}
	xs, err := readXattrs(-1, path)
	must(t, err)
	var parts []string
	for _, x := range xs {
		if withPrivate || !strings.HasPrefix(x.Name, "trusted.overlay.") {
			parts = append(parts, x.Name+"="+hex.EncodeToString(x.Value))
		}
	}
	sort.Strings(parts)
	e.Xattrs = strings.Join(parts, " ")
	return e
}

// diffTrees reports every path on which want and got differ.
func diffTrees(t *testing.T, wantName string, want map[string]entry, gotName string, got map[string]entry) {
	t.Helper()
	var paths []string
	for p := range want {
		paths = append(paths, p)
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	n := 0
	for _, p := range paths {
		w, wok := want[p]
		g, gok := got[p]
		w.dev, w.ino, g.dev, g.ino = 0, 0, 0, 0
		switch {
		case !wok:
			t.Errorf("%q: only in %s: %+v", p, gotName, g)
		case !gok:
			t.Errorf("%q: only in %s: %+v", p, wantName, w)
		case w != g:
			t.Errorf("%q differs:\n %s: %+v\n %s: %+v", p, wantName, w, gotName, g)
		default:
			continue
		}
		if n++; n > 40 {
			t.Fatal("too many differences")
		}
	}
}

// names lists the paths of a snapshot, sorted, for small assertions.
func names(s map[string]entry) string {
	var ps []string
	for p := range s {
		if p != "/" {
			ps = append(ps, p)
		}
	}
	sort.Strings(ps)
	return strings.Join(ps, " ")
}

// siblings lists what lies next to dst in its parent, apart from keep.
func siblings(t *testing.T, dst string, keep ...string) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Dir(dst))
	must(t, err)
	var out []string
	for _, e := range es {
		found := false
		for _, k := range keep {
			found = found || e.Name() == k
		}
		if !found {
			out = append(out, e.Name())
		}
	}
	return out
}

// linkCloner hardlinks when sharing is allowed and copies otherwise, like a
// cloner on a filesystem without reflinks.
type linkCloner struct{ calls, links atomic.Int64 }

func (c *linkCloner) Clone(src, dst string, shared bool) error {
	c.calls.Add(1)
	if shared {
		c.links.Add(1)
		return unix.Linkat(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, 0)
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
