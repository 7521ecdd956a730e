package deploy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/pkg/xattr"
)

// dirRef is a directory file descriptor shared by the walker and the file
// jobs that still need it; the last release closes it.
type dirRef struct {
	fd   int
	refs atomic.Int32
}

func newRef(fd int) *dirRef {
	r := &dirRef{fd: fd}
	r.refs.Store(1)
	return r
}

func (r *dirRef) hold() { r.refs.Add(1) }

func (r *dirRef) release() {
	if r.refs.Add(-1) == 0 {
		unix.Close(r.fd)
	}
}

// procPath names entry name of the directory open as fd, whatever the depth
// of that directory; the final component is not followed by l* calls.
func procPath(fd int, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(fd) + "/" + name
}

// fileJob is one regular file for a worker.
type fileJob struct {
	src, dst *dirRef
	name     string
	path     string
	layer    int
	st       unix.Stat_t
	mutable  bool
}

func (j fileJob) release() {
	j.src.release()
	j.dst.release()
}

func (b *builder) worker() {
	for j := range b.jobs {
		if b.ctx.Err() == nil {
			if err := b.cloneFile(j); err != nil {
				b.fail(b.errAt(j.layer, j.path, err))
			}
		}
		j.release()
	}
}

func (b *builder) cloneFile(j fileJob) error {
	if l, ok := b.cloner.(DirLinker); ok && !j.mutable {
		linked, err := l.LinkAt(j.src.fd, j.name, &j.st, j.dst.fd, j.name, b.dstDev)
		if err != nil {
			return err
		}
		if linked {
			b.files.Add(1)
			b.bytes.Add(j.st.Size)
			b.shared.Add(1)
			return nil
		}
	}
	src := procPath(j.src.fd, j.name)
	xs, err := readXattrs(-1, src)
	if err != nil {
		return err
	}
	if err := unsupported(xs); err != nil {
		return err
	}
	if b.cloner != nil && !j.mutable {
		err = b.cloner.Clone(src, procPath(j.dst.fd, j.name), true)
	} else {
		err = copyFile(j.src.fd, j.dst.fd, j.name, j.mutable)
	}
	if err != nil {
		return err
	}
	var got unix.Stat_t
	if err := unix.Fstatat(j.dst.fd, j.name, &got, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	switch {
	case got.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("clone made mode %#o, not a regular file", got.Mode)
	case got.Size != j.st.Size:
		return fmt.Errorf("clone has %d bytes, the layer %d", got.Size, j.st.Size)
	}
	b.files.Add(1)
	b.bytes.Add(j.st.Size)
	if got.Dev == j.st.Dev && got.Ino == j.st.Ino {
		if j.mutable {
			return errors.New("clone shares the layer's inode under a mutable prefix")
		}
		b.shared.Add(1)
		return nil // same inode: its metadata is already right, and not ours to change
	}
	return setMeta(j.dst.fd, j.name, &j.st, xs)
}

func (b *builder) symlink(top *listing, p, name string, st *unix.Stat_t, dst *dirRef) error {
	target, err := readlinkat(top.dir.fd, name)
	if err != nil {
		return b.errAt(top.layer, p, err)
	}
	xs, err := readXattrs(-1, procPath(top.dir.fd, name))
	if err != nil {
		return b.errAt(top.layer, p, err)
	}
	if err := unix.Symlinkat(target, dst.fd, name); err != nil {
		return b.errAt(top.layer, p, err)
	}
	if err := setMeta(dst.fd, name, st, xs); err != nil {
		return b.errAt(top.layer, p, err)
	}
	b.symlinks.Add(1)
	return nil
}

func (b *builder) special(top *listing, p, name string, st *unix.Stat_t, dst *dirRef) error {
	xs, err := readXattrs(-1, procPath(top.dir.fd, name))
	if err != nil {
		return b.errAt(top.layer, p, err)
	}
	if err := unix.Mknodat(dst.fd, name, st.Mode&unix.S_IFMT|0o600, int(st.Rdev)); err != nil {
		return b.errAt(top.layer, p, err)
	}
	if err := setMeta(dst.fd, name, st, xs); err != nil {
		return b.errAt(top.layer, p, err)
	}
	b.others.Add(1)
	return nil
}

func readlinkat(fd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(fd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// setMeta gives the non-directory name in dirfd the owner, mode, xattrs and
// times of st. chown comes first: it clears setuid bits and capabilities.
func setMeta(dirfd int, name string, st *unix.Stat_t, xs []xattr.Attr) error {
	if err := unix.Fchownat(dirfd, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		// name is not a symlink (Build created it), so following is moot.
		if err := unix.Fchmodat(dirfd, name, st.Mode&0o7777, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	if err := setXattrs(-1, procPath(dirfd, name), xs); err != nil {
		return err
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("utimes: %w", err)
	}
	return nil
}

func setDirMeta(fd int, m *dirMeta) error {
	if err := unix.Fchown(fd, int(m.st.Uid), int(m.st.Gid)); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if err := unix.Fchmod(fd, m.st.Mode&0o7777); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if err := setXattrs(fd, "", m.xattrs); err != nil {
		return err
	}
	ts := []unix.Timespec{m.st.Atim, m.st.Mtim}
	if err := unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("utimes: %w", err)
	}
	return nil
}

// linkFollowers gives every hardlinked inode its further names.
func (b *builder) linkFollowers(root int) error {
	for _, f := range b.followers {
		if err := b.ctx.Err(); err != nil {
			return fmt.Errorf("deploy: %w", err)
		}
		if err := linkAt(root, f.leader, f.path); err != nil {
			return b.errAt(f.layer, f.path, fmt.Errorf("link to %s: %w", f.leader, err))
		}
		b.hardlinks.Add(1)
	}
	return nil
}

func linkAt(root int, oldPath, newPath string) error {
	oldDir, oldName := splitPath(oldPath)
	newDir, newName := splitPath(newPath)
	ofd, err := openPath(root, oldDir)
	if err != nil {
		return err
	}
	defer unix.Close(ofd)
	nfd, err := openPath(root, newDir)
	if err != nil {
		return err
	}
	defer unix.Close(nfd)
	return unix.Linkat(ofd, oldName, nfd, newName, 0)
}

func splitPath(p string) (dir, name string) {
	i := strings.LastIndexByte(p, '/')
	return p[:i], p[i+1:]
}

// openPath opens the directory at image path p ("" is the root) below root,
// one component at a time so that neither symlinks nor PATH_MAX matter.
func openPath(root int, p string) (int, error) {
	fd, err := unix.Openat(root, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	for _, c := range strings.Split(p, "/") {
		if err != nil || c == "" {
			continue
		}
		var next int
		next, err = unix.Openat(fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		fd = next
	}
	return fd, err
}

// applyDirs sets the metadata of m's subdirectories, deepest first, once no
// entry will be added to them any more (which would change their mtime).
func (b *builder) applyDirs(fd int, p string, m *dirMeta) error {
	for _, c := range m.children {
		if err := b.ctx.Err(); err != nil {
			return fmt.Errorf("deploy: %w", err)
		}
		cp := strings.TrimSuffix(p, "/") + "/" + c.name
		cfd, err := unix.Openat(fd, c.name, openDir, 0)
		if err != nil {
			return b.errAt(c.layer, cp, err)
		}
		err = b.applyDirs(cfd, cp, c)
		if err == nil {
			if err = setDirMeta(cfd, c); err != nil {
				err = b.errAt(c.layer, cp, err)
			}
		}
		unix.Close(cfd)
		if err != nil {
			return err
		}
	}
	return nil
}
