package etcmerge

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/pkg/xattr"
)

// selinuxXattr is the one xattr Merge leaves to the caller (see the
// package documentation).
const selinuxXattr = "security.selinux"

// same reports whether entry an (ast) of a and entry bn (bst) of b are the
// same for the merge: type, permission bits, owner, xattrs, and content
// (file data, symlink target, device number). A directory's children are
// not compared. An empty name stands for the directory itself.
func (m *merger) same(a *dir, an string, ast *unix.Stat_t, b *dir, bn string, bst *unix.Stat_t) (bool, error) {
	typ := ast.Mode & unix.S_IFMT
	if typ != bst.Mode&unix.S_IFMT || ast.Mode&0o7777 != bst.Mode&0o7777 ||
		ast.Uid != bst.Uid || ast.Gid != bst.Gid {
		return false, nil
	}
	switch typ {
	case unix.S_IFCHR, unix.S_IFBLK:
		if ast.Rdev != bst.Rdev {
			return false, nil
		}
	case unix.S_IFREG, unix.S_IFLNK:
		if ast.Size != bst.Size {
			return false, nil
		}
	}
	ax, err := readXattrs(a, an)
	if err != nil {
		return false, err
	}
	bx, err := readXattrs(b, bn)
	if err != nil {
		return false, err
	}
	if !slices.EqualFunc(ax, bx, xattr.Attr.Equal) {
		return false, nil
	}
	switch typ {
	case unix.S_IFLNK:
		at, err := readlinkat(a, an)
		if err != nil {
			return false, err
		}
		bt, err := readlinkat(b, bn)
		if err != nil {
			return false, err
		}
		return at == bt, nil
	case unix.S_IFREG:
		return sameData(a, an, ast, b, bn, bst)
	}
	return true, nil
}

// sameData compares the data of two regular files of the same size.
func sameData(a *dir, an string, ast *unix.Stat_t, b *dir, bn string, bst *unix.Stat_t) (bool, error) {
	af, err := openFile(a, an, ast)
	if err != nil {
		return false, err
	}
	defer unix.Close(af)
	bf, err := openFile(b, bn, bst)
	if err != nil {
		return false, err
	}
	defer unix.Close(bf)
	abuf, bbuf := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		ak, aerr := readFull(af, abuf)
		if aerr != nil && aerr != io.EOF {
			return false, a.errAt(an, "read", aerr)
		}
		bk, berr := readFull(bf, bbuf)
		if berr != nil && berr != io.EOF {
			return false, b.errAt(bn, "read", berr)
		}
		if ak != bk || !bytes.Equal(abuf[:ak], bbuf[:bk]) {
			return false, nil
		}
		if aerr == io.EOF || berr == io.EOF {
			return aerr == berr, nil
		}
	}
}

// readFull reads until buf is full or the file ends (io.EOF, with the
// bytes read before it).
func readFull(fd int, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		r, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		} else if err != nil {
			return n, err
		} else if r == 0 {
			return n, io.EOF
		}
		n += r
	}
	return n, nil
}

// openFile opens the regular file name of d for reading, checking that it is
// the inode st describes (it is not followed if it became a symlink, and
// a fifo put in its place does not block the open).
func openFile(d *dir, name string, st *unix.Stat_t) (int, error) {
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, d.errAt(name, "open", err)
	}
	var got unix.Stat_t
	if err := unix.Fstat(fd, &got); err != nil {
		unix.Close(fd)
		return -1, d.errAt(name, "fstat", err)
	}
	if got.Dev != st.Dev || got.Ino != st.Ino || got.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, d.errAt(name, "open", errors.New("changed during the merge"))
	}
	return fd, nil
}

// copyEntry copies the non-directory name (st) of current's directory c to
// the same name in the result's directory n, where nothing has that name:
// data, symlink target or device number, owner, xattrs, mode and times.
func copyEntry(c, n *dir, name string, st *unix.Stat_t) error {
	xs, err := readXattrs(c, name)
	if err != nil {
		return err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if err := copyFile(c, n, name, st, xs); err != nil {
			return err
		}
	case unix.S_IFLNK:
		target, err := readlinkat(c, name)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(target, n.fd, name); err != nil {
			return n.errAt(name, "symlink", err)
		}
		if err := unix.Fchownat(n.fd, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return n.errAt(name, "chown", err)
		}
		if err := writeXattrs(n, name, xs); err != nil {
			return err
		}
	default: // character and block devices, fifos, sockets
		if err := unix.Mknodat(n.fd, name, st.Mode&unix.S_IFMT|0o600, int(st.Rdev)); err != nil {
			return n.errAt(name, "mknod", err)
		}
		if err := unix.Fchownat(n.fd, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return n.errAt(name, "chown", err)
		}
		if err := writeXattrs(n, name, xs); err != nil {
			return err
		}
		// Merge made name, a device node, just now: there is no symlink to
		// follow (and fchmodat cannot not follow).
		if err := unix.Fchmodat(n.fd, name, st.Mode&0o7777, 0); err != nil {
			return n.errAt(name, "chmod", err)
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(n.fd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return n.errAt(name, "utimes", err)
	}
	return nil
}

// copyFile copies the regular file name of c to a new file in n. The data
// goes through a buffer: copy_file_range could reflink, and the result
// must share nothing with the booted deployment.
func copyFile(c, n *dir, name string, st *unix.Stat_t, xs []xattr.Attr) (err error) {
	in, err := openFile(c, name, st)
	if err != nil {
		return err
	}
	defer unix.Close(in)
	out, err := unix.Openat(n.fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return n.errAt(name, "create", err)
	}
	defer func() {
		if cerr := unix.Close(out); err == nil && cerr != nil {
			err = n.errAt(name, "close", cerr)
		}
	}()
	buf := make([]byte, 64<<10)
	var size int64
	for {
		r, rerr := readFull(in, buf)
		for w := 0; w < r; {
			k, err := unix.Write(out, buf[w:r])
			if err == unix.EINTR {
				continue
			} else if err != nil {
				return n.errAt(name, "write", err)
			}
			w += k
		}
		size += int64(r)
		if rerr == io.EOF {
			break
		} else if rerr != nil {
			return c.errAt(name, "read", rerr)
		}
	}
	if size != st.Size {
		return c.errAt(name, "read", errors.New("changed during the merge"))
	}
	// chown first: it clears setuid bits and file capabilities.
	if err := unix.Fchown(out, int(st.Uid), int(st.Gid)); err != nil {
		return n.errAt(name, "chown", err)
	}
	if err := writeXattrsFd(n, name, out, xs); err != nil {
		return err
	}
	if err := unix.Fchmod(out, st.Mode&0o7777); err != nil {
		return n.errAt(name, "chmod", err)
	}
	return nil
}

// copyDirMeta gives the result's directory n the owner, xattrs, mode and
// times of current's directory c.
func copyDirMeta(c, n *dir) error {
	xs, err := readXattrs(c, "")
	if err != nil {
		return err
	}
	if err := unix.Fchown(n.fd, int(c.st.Uid), int(c.st.Gid)); err != nil {
		return n.errAt("", "chown", err)
	}
	if err := writeXattrsFd(n, "", n.fd, xs); err != nil {
		return err
	}
	if err := unix.Fchmod(n.fd, c.st.Mode&0o7777); err != nil {
		return n.errAt("", "chmod", err)
	}
	ts := []unix.Timespec{c.st.Atim, c.st.Mtim}
	if err := unix.UtimesNanoAt(n.fd, "", ts, unix.AT_EMPTY_PATH); err != nil {
		return n.errAt("", "utimes", err)
	}
	return nil
}

func readlinkat(d *dir, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(d.fd, name, buf)
		if err != nil {
			return "", d.errAt(name, "readlink", err)
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// readNames lists the names in d (without "." and ".."), through a
// descriptor of its own so that d's offset is untouched.
func readNames(d *dir) ([]string, error) {
	fd, err := unix.Openat(d.fd, ".", openDir, 0)
	if err != nil {
		return nil, d.errAt("", "open", err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 32<<10)
	var names []string
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		} else if err != nil {
			return nil, d.errAt("", "getdents", err)
		} else if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// procPath names entry name of the directory open as fd whatever its depth;
// l* calls do not follow its final component.
func procPath(fd int, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(fd) + "/" + name
}

// readXattrs reads the xattrs of name in d (of d itself when name is ""),
// sorted by name, security.selinux left out.
func readXattrs(d *dir, name string) ([]xattr.Attr, error) {
	f := xattr.Path(procPath(d.fd, name))
	if name == "" {
		f = xattr.FD(d.fd)
	}
	xs, err := xattr.List(f)
	if err != nil {
		return nil, d.errAt(name, "reading xattrs", err)
	}
	return xattr.Filter(xs, func(n string) bool { return n != selinuxXattr }), nil
}

// writeXattrs makes xs the xattrs of the non-directory name in d: those it
// has and xs lacks (say, an ACL inherited from a default ACL) are removed.
// security.selinux is left as it is.
func writeXattrs(d *dir, name string, xs []xattr.Attr) error {
	return replaceXattrs(d, name, xattr.Path(procPath(d.fd, name)), xs)
}

// writeXattrsFd is writeXattrs for name open as fd.
func writeXattrsFd(d *dir, name string, fd int, xs []xattr.Attr) error {
	return replaceXattrs(d, name, xattr.FD(fd), xs)
}

func replaceXattrs(d *dir, name string, f xattr.File, xs []xattr.Attr) error {
	if err := xattr.Replace(f, xs, func(n string) bool { return n == selinuxXattr }); err != nil {
		return d.errAt(name, "writing xattrs", err)
	}
	return nil
}
