package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/pkg/xattr"
)

// Node is what tree-comparing tests see of one path: everything a file
// system shows about it except link counts, directory sizes and atimes.
type Node struct {
	Type     uint32 // S_IFMT bits
	Perm     uint32 // permission bits with setuid, setgid and sticky
	UID, GID uint32
	Size     int64  // regular files and symlinks; 0 otherwise
	Rdev     uint64 // character and block devices; 0 otherwise
	Mtime    int64  // nanoseconds since the epoch
	Target   string // symlink target
	SHA256   string // regular file content
	Xattrs   string // sorted "name=hexvalue" pairs, space separated, overlay's own left out
	Dev, Ino uint64 // identity, for hardlink grouping; not content
}

// Tree maps a path ("/" for the root itself, "/a/b" below it, bytes as the
// file system has them) to its Node.
type Tree map[string]Node

// OverlayXattr reports whether name is overlayfs metadata
// (trusted.overlay.*, user.overlay.*) rather than content.
func OverlayXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.")
}

// Snapshot describes every path below root (root included). It walks
// through directory descriptors: no PATH_MAX limit, no symlink followed,
// non-UTF-8 names kept byte for byte. A name that readdir lists but lookup
// does not find is skipped: overlayfs lists the whiteouts of a directory that
// only one layer has, although they are not there.
func Snapshot(t testing.TB, root string) Tree {
	t.Helper()
	tr := Tree{}
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	if tr["/"], err = describeAt(fd, "", &st); err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	if err := walkAt(fd, "", tr); err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	return tr
}

// Sub returns the part of tr at and below prefix ("/etc"), re-rooted so
// that prefix becomes "/".
func (tr Tree) Sub(prefix string) Tree {
	out := Tree{}
	for p, n := range tr {
		if p == prefix {
			out["/"] = n
		} else if rest, ok := strings.CutPrefix(p, prefix+"/"); ok {
			out["/"+rest] = n
		}
	}
	return out
}

// Paths returns the paths of tr, sorted.
func (tr Tree) Paths() []string {
	ps := make([]string, 0, len(tr))
	for p := range tr {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// String formats n for failure messages; names and values are quoted.
func (n Node) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "type=%o perm=%04o uid=%d gid=%d mtime=%d", n.Type>>12, n.Perm, n.UID, n.GID, n.Mtime)
	switch n.Type {
	case unix.S_IFREG:
		fmt.Fprintf(&b, " size=%d sha256=%.12s", n.Size, n.SHA256)
	case unix.S_IFLNK:
		fmt.Fprintf(&b, " target=%q", n.Target)
	case unix.S_IFCHR, unix.S_IFBLK:
		fmt.Fprintf(&b, " rdev=%d:%d", unix.Major(n.Rdev), unix.Minor(n.Rdev))
	}
	if n.Xattrs != "" {
		fmt.Fprintf(&b, " xattrs=[%s]", n.Xattrs)
	}
	return b.String()
}

func walkAt(fd int, rel string, tr Tree) error {
	names, err := dirNames(fd)
	if err != nil {
		return fmt.Errorf("%q: %w", rel+"/", err)
	}
	for _, name := range names {
		p := rel + "/" + name
		var st unix.Stat_t
		err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == unix.ENOENT {
			continue
		} else if err != nil {
			return fmt.Errorf("%q: %w", p, err)
		}
		n, err := describeAt(fd, name, &st)
		if err != nil {
			return fmt.Errorf("%q: %w", p, err)
		}
		tr[p] = n
		if n.Type == unix.S_IFDIR {
			cfd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("%q: %w", p, err)
			}
			err = walkAt(cfd, p, tr)
			unix.Close(cfd)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// dirNames reads every name of the directory fd but "." and "..".
func dirNames(fd int) ([]string, error) {
	dup, err := unix.Dup(fd)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}

// describeAt describes name in the directory dirfd, or dirfd itself when
// name is "".
func describeAt(dirfd int, name string, st *unix.Stat_t) (Node, error) {
	n := Node{Type: st.Mode & unix.S_IFMT, Perm: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid,
		Mtime: st.Mtim.Nano(), Dev: uint64(st.Dev), Ino: st.Ino}
	path := "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
	if name == "" {
		path += "."
	}
	switch n.Type {
	case unix.S_IFREG:
		n.Size = st.Size
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return n, err
		}
		f := os.NewFile(uintptr(fd), name)
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return n, err
		}
		n.SHA256 = hex.EncodeToString(h.Sum(nil))
	case unix.S_IFLNK:
		n.Size = st.Size
		buf := make([]byte, st.Size+1)
		k, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return n, err
		}
		n.Target = string(buf[:k])
	case unix.S_IFCHR, unix.S_IFBLK:
		n.Rdev = uint64(st.Rdev)
	}
	xs, err := listXattrs(path)
	if err != nil {
		return n, err
	}
	n.Xattrs = xs
	return n, nil
}

// listXattrs reads the xattrs of path, not following a final symlink, as
// sorted "name=hexvalue" words, overlay's own left out.
func listXattrs(path string) (string, error) {
	xs, err := xattr.List(xattr.Path(path))
	if err != nil {
		return "", err
	}
	var parts []string
	for _, x := range xs {
		if !OverlayXattr(x.Name) {
			parts = append(parts, x.Name+"="+hex.EncodeToString(x.Value))
		}
	}
	return strings.Join(parts, " "), nil
}
