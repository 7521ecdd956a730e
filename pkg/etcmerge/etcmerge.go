// Package etcmerge is ostree's three-way /etc merge, run when a staged
// deployment is finalized (at shutdown): the admin's changes to the booted
// /etc are carried over onto the new image's defaults.
//
// # Inputs
//
// [Merge] takes three directory trees:
//   - oldDefault: the booted deployment's /usr/etc, the image defaults it was
//     deployed with; only read;
//   - current: the booted deployment's live /etc, as the admin left it; only
//     read;
//   - newDefault: the staged deployment's /etc, a fresh copy of the new
//     image's /etc. Merge edits it in place into the staged deployment's /etc.
//
// # Rules
//
// Every path (the root included) is decided on its own from its entries in
// the three trees. Two entries are the same when their type, permission bits
// (mode & 07777), owner (uid, gid), xattrs and content (file data, symlink
// target, device number) agree; times, inode numbers and link counts are
// ignored, and so is the xattr security.selinux (see below).
//
//   - Changed by the admin (current's entry differs from oldDefault's in
//     anything compared) or added by the admin (only current has it): the
//     admin's entry wins whole, content and metadata alike, replacing
//     whatever newDefault has there. A change of mode, owner or xattrs alone
//     keeps the admin's content too, even where the new default changed it.
//     A non-directory replaces a directory with all it holds; a directory
//     replaces a non-directory.
//   - Left alone by the admin (current's entry is oldDefault's): newDefault's
//     version stays, and stays absent if newDefault removed it.
//   - Deleted by the admin (in oldDefault, not in current): absent from the
//     result, even if newDefault has a new version of it or new entries
//     below it.
//   - New defaults (only newDefault has the path): they appear.
//
// A directory is an entry like any other (its own mode, owner and xattrs
// follow the rules above) and a container whose paths are merged one by
// one. Hence:
//   - a directory the admin added is copied whole where newDefault has
//     nothing at its path; where newDefault added a directory of the same
//     name, the two are merged (the admin's directory metadata and entries
//     win, newDefault's other entries appear as new defaults);
//   - a directory the admin left alone but that newDefault removed, or
//     replaced with a non-directory, is kept when it holds an admin's change
//     somewhere below: it then gets current's metadata and holds only those
//     changes and the directories leading to them (ostree does the same);
//   - a non-directory of the admin's where newDefault has a directory drops
//     that directory, new defaults in it included.
//
// # Differences from ostree
//
//   - ostree fails when a file the admin changed became a directory in the
//     new defaults; Merge replaces the directory with the admin's file.
//   - ostree ignores a directory's metadata when newDefault has that
//     directory; Merge keeps the admin's mode, owner and xattrs.
//   - ostree neither compares nor copies xattrs and relabels the result with
//     the new SELinux policy; Merge compares and copies every xattr but
//     security.selinux, which it neither compares, copies nor removes:
//     labels are the policy's, and comparing them would turn every relabeled
//     file into an admin change. Labeling the result is the caller's.
//   - ostree rejects device nodes, fifos and sockets in /etc; Merge copies
//     them with mknod.
//
// # Safety
//
// Nothing is followed: every entry is looked up with AT_SYMLINK_NOFOLLOW or
// opened with O_NOFOLLOW relative to its parent directory's descriptor, and
// symlinks are copied verbatim, wherever they point. oldDefault and current
// are only read; every write is relative to a directory descriptor inside
// newDefault, so nothing outside newDefault is ever written. Merge refuses
// trees that overlap (newDefault being, holding or lying inside another
// input). Copies are real copies, never hardlinks to or reflinks of
// current's files (current belongs to the booted deployment); names that are
// hardlinks of one inode in current become separate files. The three roots
// must be directories, not symlinks to them.
//
// # Crash safety and reruns
//
// Merge is not atomic: it edits newDefault in place, and an error or a
// crash leaves it half merged. That is the caller's to handle, and it can,
// because the staged deployment is not bootable until it is finalized: the
// caller discards newDefault, copies the new image's /etc afresh and runs
// Merge again on that fresh copy (never on a half merged tree). On success
// Merge has synced newDefault's filesystem (syncfs).
package etcmerge

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// Stats counts the paths each rule decided, for the log. Each path of the
// three trees counts under at most one rule; a directory and each entry
// below it count separately.
type Stats struct {
	// AdminKept: paths the admin changed whose entry is current's in the
	// result. Directories kept only to hold an admin's change below them do
	// not count.
	AdminKept int
	// Deleted: paths the admin deleted (in oldDefault, not in current) that
	// newDefault had, absent from the result.
	Deleted int
	// DefaultsTaken: paths the admin left alone (same in oldDefault and
	// current, or in neither) whose new default differs from current's entry
	// and is what the result has: new defaults, changed defaults and
	// defaults that newDefault removed.
	DefaultsTaken int
	// Added: paths only current has (added by the admin), copied into the
	// result.
	Added int
}

// String summarises s on one line, such as
// "admin kept 3, added 1, deleted 0, defaults taken 12".
func (s Stats) String() string {
	return fmt.Sprintf("admin kept %d, added %d, deleted %d, defaults taken %d",
		s.AdminKept, s.Added, s.Deleted, s.DefaultsTaken)
}

// Error is returned by Merge for a failure about one path.
type Error struct {
	Path string // the path in one of the three trees ("/sysroot/.../etc/ssh")
	Op   string // what failed: "open", "unlink", "writing xattrs", ...
	Err  error
}

func (e *Error) Error() string { return fmt.Sprintf("etcmerge: %s: %s: %v", e.Path, e.Op, e.Err) }

func (e *Error) Unwrap() error { return e.Err }

// ErrOverlap is wrapped by the error for trees that overlap.
var ErrOverlap = errors.New("trees overlap")

// Merge merges the admin's changes (current against oldDefault) into
// newDefault, in place, by the rules of the package documentation. On error
// newDefault is half merged and must be discarded (see "Crash safety and
// reruns"); the error is an [*Error] naming the path concerned.
func Merge(oldDefault, current, newDefault string) (Stats, error) {
	if err := unix.Access("/proc/self/fd", unix.F_OK); err != nil {
		return Stats{}, &Error{Path: "/proc/self/fd", Op: "access (is /proc mounted?)", Err: err}
	}
	m := &merger{}
	var roots [3]*dir
	for i, p := range []string{oldDefault, current, newDefault} {
		d, err := m.openRoot(p)
		if err != nil {
			for _, r := range roots[:i] {
				r.close()
			}
			return Stats{}, err
		}
		roots[i] = d
		m.roots[i] = d.id
	}
	o, c, n := roots[0], roots[1], roots[2]
	defer o.close()
	defer c.close()
	defer n.close()
	m.newDefault = n.t
	if err := checkOverlap(o, c, n); err != nil {
		return Stats{}, err
	}
	if err := m.mergeRoot(o, c, n); err != nil {
		return Stats{}, err
	}
	if err := unix.Syncfs(n.fd); err != nil {
		return Stats{}, n.errAt("", "syncfs", err)
	}
	return m.stats, nil
}

// checkOverlap fails if newDefault is, holds or lies inside oldDefault or
// current: writing it would write them.
func checkOverlap(o, c, n *dir) error {
	for _, other := range []struct {
		name string
		d    *dir
	}{{"oldDefault", o}, {"current", c}} {
		in, err := below(n, other.d.id)
		if err != nil {
			return err
		}
		if in {
			return n.errAt("", "open", fmt.Errorf("%w: newDefault is or lies inside %s %s", ErrOverlap, other.name, other.d.t.root))
		}
		if in, err = below(other.d, n.id); err != nil {
			return err
		}
		if in {
			return n.errAt("", "open", fmt.Errorf("%w: newDefault holds %s %s", ErrOverlap, other.name, other.d.t.root))
		}
	}
	return nil
}

// below reports whether d is the directory top or lies below it, going up
// through ".." to the root of the filesystem tree.
func below(d *dir, top fileID) (bool, error) {
	fd, err := unix.Openat(d.fd, ".", openDir, 0)
	if err != nil {
		return false, d.errAt("", "open", err)
	}
	for {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return false, d.errAt("", "fstat", err)
		}
		if (fileID{st.Dev, st.Ino}) == top {
			unix.Close(fd)
			return true, nil
		}
		up, err := unix.Openat(fd, "..", openDir, 0)
		unix.Close(fd)
		if err != nil {
			return false, d.errAt("", "open ..", err)
		}
		var ust unix.Stat_t
		if err := unix.Fstat(up, &ust); err != nil {
			unix.Close(up)
			return false, d.errAt("", "fstat ..", err)
		}
		if ust.Dev == st.Dev && ust.Ino == st.Ino {
			unix.Close(up)
			return false, nil // "/"
		}
		fd = up
	}
}

// merger is the state of one Merge.
type merger struct {
	stats      Stats
	roots      [3]fileID // oldDefault, current, newDefault
	newDefault *input
}

// mergeRoot merges the three roots: the root's own entry follows the rules
// like any other path, but is never removed or replaced.
func (m *merger) mergeRoot(o, c, n *dir) error {
	admin, err := m.same(o, "", &o.st, c, "", &c.st)
	if err != nil {
		return err
	}
	admin = !admin
	if admin {
		m.stats.AdminKept++
	} else if same, err := m.same(c, "", &c.st, n, "", &n.st); err != nil {
		return err
	} else if !same {
		m.stats.DefaultsTaken++
	}
	if err := m.mergeDir(o, c, n); err != nil {
		return err
	}
	if admin {
		return copyDirMeta(c, n)
	}
	return nil
}

// mergeDir merges the directory c of current and o of oldDefault (nil when
// oldDefault has no directory at this path) into n, the result's directory
// at the same path.
func (m *merger) mergeDir(o, c, n *dir) error {
	names, err := unionNames(o, c, n)
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := m.mergeName(o, c, n, name); err != nil {
			return err
		}
	}
	return nil
}

// mergeName decides and applies the rule for one name of a merged
// directory.
func (m *merger) mergeName(o, c, n *dir, name string) error {
	oe, err := o.lstat(name)
	if err != nil {
		return err
	}
	ce, err := c.lstat(name)
	if err != nil {
		return err
	}
	ne, err := n.lstat(name)
	if err != nil {
		return err
	}
	switch {
	case ce == nil && oe == nil: // a new default, with everything below it
		k, err := m.countTree(n, name, ne)
		m.stats.DefaultsTaken += k
		return err
	case ce == nil: // deleted by the admin
		if ne == nil {
			return nil
		}
		k, err := m.countCommon(o, n, name, oe, ne)
		if err != nil {
			return err
		}
		m.stats.Deleted += k
		return m.removeAll(n, name, ne)
	}
	same := false
	if oe != nil {
		if same, err = m.same(o, name, oe, c, name, ce); err != nil {
			return err
		}
	}
	if same {
		return m.leftAlone(o, c, n, name, oe, ce, ne)
	}
	if oe == nil {
		m.stats.Added++
	} else {
		m.stats.AdminKept++
	}
	return m.takeCurrent(o, c, n, name, oe, ce, ne)
}

// takeCurrent makes current's entry name (changed or added by the admin)
// the result's, replacing newDefault's.
func (m *merger) takeCurrent(o, c, n *dir, name string, oe, ce, ne *unix.Stat_t) error {
	if !isDir(ce) {
		if ne != nil {
			if isDir(ne) && isDir(oe) {
				// Below name, current has nothing: what both oldDefault
				// and newDefault have there was deleted by the admin.
				k, err := m.countCommonBelow(o, n, name)
				if err != nil {
					return err
				}
				m.stats.Deleted += k
			}
			if err := m.removeAll(n, name, ne); err != nil {
				return err
			}
		}
		return copyEntry(c, n, name, ce)
	}
	var od *dir
	if isDir(oe) {
		var err error
		if od, err = m.openSub(o, name, oe); err != nil {
			return err
		}
		defer od.close()
	}
	return m.currentDir(od, c, n, name, ce, ne)
}

// currentDir makes current's directory name the result's: newDefault's
// directory there (if any) gets current's metadata and a merged content,
// anything else is replaced by a new directory. od is oldDefault's
// directory name, or nil.
func (m *merger) currentDir(od, c, n *dir, name string, ce, ne *unix.Stat_t) error {
	cd, err := m.openSub(c, name, ce)
	if err != nil {
		return err
	}
	defer cd.close()
	if !isDir(ne) {
		if ne != nil {
			if err := m.removeAll(n, name, ne); err != nil {
				return err
			}
		}
		if err := unix.Mkdirat(n.fd, name, 0o700); err != nil {
			return n.errAt(name, "mkdir", err)
		}
	}
	nd, err := m.openSub(n, name, nil)
	if err != nil {
		return err
	}
	defer nd.close()
	if err := m.mergeDir(od, cd, nd); err != nil {
		return err
	}
	return copyDirMeta(cd, nd)
}

// leftAlone handles name, which the admin left as oldDefault has it:
// newDefault's version stays, unless name is a directory holding an admin's
// change somewhere below.
func (m *merger) leftAlone(o, c, n *dir, name string, oe, ce, ne *unix.Stat_t) error {
	if !isDir(ce) {
		switch {
		case ne == nil:
			m.stats.DefaultsTaken++ // removed by the new defaults
		case isDir(ne):
			k, err := m.countTree(n, name, ne)
			if err != nil {
				return err
			}
			m.stats.DefaultsTaken += k
		default:
			same, err := m.same(c, name, ce, n, name, ne)
			if err != nil {
				return err
			}
			if !same {
				m.stats.DefaultsTaken++
			}
		}
		return nil
	}
	od, err := m.openSub(o, name, oe)
	if err != nil {
		return err
	}
	defer od.close()
	if isDir(ne) {
		same, err := m.same(c, name, ce, n, name, ne)
		if err != nil {
			return err
		}
		if !same {
			m.stats.DefaultsTaken++
		}
		cd, err := m.openSub(c, name, ce)
		if err != nil {
			return err
		}
		defer cd.close()
		nd, err := m.openSub(n, name, ne)
		if err != nil {
			return err
		}
		defer nd.close()
		return m.mergeDir(od, cd, nd)
	}
	cd, err := m.openSub(c, name, ce)
	if err != nil {
		return err
	}
	need, k, err := m.adminBelow(od, cd)
	cd.close()
	if err != nil {
		return err
	}
	if !need {
		// newDefault's removal (or non-directory) stands, for name and
		// everything current has below it.
		m.stats.DefaultsTaken += 1 + k
		return nil
	}
	return m.currentDir(od, c, n, name, ce, ne)
}

// adminBelow reports whether current's directory c holds, at any depth, an
// entry that differs from oldDefault's directory o or that o lacks; when
// not, k is the number of entries below c.
func (m *merger) adminBelow(o, c *dir) (need bool, k int, err error) {
	names, err := readNames(c)
	if err != nil {
		return false, 0, err
	}
	for _, name := range names {
		ce, err := c.lstat(name)
		if err != nil {
			return false, 0, err
		}
		if ce == nil {
			continue // gone since it was listed
		}
		oe, err := o.lstat(name)
		if err != nil {
			return false, 0, err
		}
		if oe == nil {
			return true, 0, nil
		}
		if same, err := m.same(o, name, oe, c, name, ce); err != nil || !same {
			return err == nil, 0, err
		}
		k++
		if isDir(ce) {
			need, sub, err := m.subdirs(o, c, name, oe, ce, m.adminBelow)
			if err != nil || need {
				return need, 0, err
			}
			k += sub
		}
	}
	return false, k, nil
}

// subdirs opens name in a and b and calls f on them.
func (m *merger) subdirs(a, b *dir, name string, ast, bst *unix.Stat_t, f func(a, b *dir) (bool, int, error)) (bool, int, error) {
	ad, err := m.openSub(a, name, ast)
	if err != nil {
		return false, 0, err
	}
	defer ad.close()
	bd, err := m.openSub(b, name, bst)
	if err != nil {
		return false, 0, err
	}
	defer bd.close()
	return f(ad, bd)
}

// countTree counts name (st, in d) and every entry below it.
func (m *merger) countTree(d *dir, name string, st *unix.Stat_t) (int, error) {
	if !isDir(st) {
		return 1, nil
	}
	sub, err := m.openSub(d, name, st)
	if err != nil {
		return 0, err
	}
	defer sub.close()
	names, err := readNames(sub)
	if err != nil {
		return 0, err
	}
	k := 1
	for _, child := range names {
		cst, err := sub.lstat(child)
		if err != nil {
			return 0, err
		}
		if cst != nil {
			c, err := m.countTree(sub, child, cst)
			if err != nil {
				return 0, err
			}
			k += c
		}
	}
	return k, nil
}

// countCommon counts the paths at and below name that both o and n have.
func (m *merger) countCommon(o, n *dir, name string, oe, ne *unix.Stat_t) (int, error) {
	if oe == nil || ne == nil {
		return 0, nil
	}
	if !isDir(oe) || !isDir(ne) {
		return 1, nil
	}
	k, err := m.countCommonBelow(o, n, name)
	return 1 + k, err
}

// countCommonBelow counts the paths below name that both o and n have;
// name is a directory in both.
func (m *merger) countCommonBelow(o, n *dir, name string) (int, error) {
	oe, err := o.lstat(name)
	if err != nil {
		return 0, err
	}
	ne, err := n.lstat(name)
	if err != nil {
		return 0, err
	}
	if !isDir(oe) || !isDir(ne) {
		return 0, nil
	}
	_, k, err := m.subdirs(o, n, name, oe, ne, func(od, nd *dir) (bool, int, error) {
		names, err := readNames(nd)
		if err != nil {
			return false, 0, err
		}
		k := 0
		for _, child := range names {
			oc, err := od.lstat(child)
			if err != nil {
				return false, 0, err
			}
			nc, err := nd.lstat(child)
			if err != nil {
				return false, 0, err
			}
			c, err := m.countCommon(od, nd, child, oc, nc)
			if err != nil {
				return false, 0, err
			}
			k += c
		}
		return false, k, nil
	})
	return k, err
}

// removeAll removes name (st) from the result's directory n, with
// everything below it.
func (m *merger) removeAll(n *dir, name string, st *unix.Stat_t) error {
	if n.t != m.newDefault {
		return n.errAt(name, "remove", errors.New("not in newDefault (a bug)"))
	}
	if isDir(st) {
		sub, err := m.openSub(n, name, st)
		if err != nil {
			return err
		}
		names, err := readNames(sub)
		for _, child := range names {
			if err != nil {
				break
			}
			var cst *unix.Stat_t
			if cst, err = sub.lstat(child); err == nil && cst != nil {
				err = m.removeAll(sub, child, cst)
			}
		}
		sub.close()
		if err != nil {
			return err
		}
		if err := unix.Unlinkat(n.fd, name, unix.AT_REMOVEDIR); err != nil {
			return n.errAt(name, "rmdir", err)
		}
		return nil
	}
	if err := unix.Unlinkat(n.fd, name, 0); err != nil {
		return n.errAt(name, "unlink", err)
	}
	return nil
}

// unionNames lists the names of the directories that are not nil, sorted,
// each once.
func unionNames(ds ...*dir) ([]string, error) {
	var all []string
	for _, d := range ds {
		if d == nil {
			continue
		}
		names, err := readNames(d)
		if err != nil {
			return nil, err
		}
		all = append(all, names...)
	}
	slices.Sort(all)
	return slices.Compact(all), nil
}

func isDir(st *unix.Stat_t) bool { return st != nil && st.Mode&unix.S_IFMT == unix.S_IFDIR }

// input is one of the three trees.
type input struct {
	root string
}

// fileID identifies an inode.
type fileID struct{ dev, ino uint64 }

// dir is an open directory of a tree.
type dir struct {
	t   *input
	rel string // path below the root, "" for the root
	fd  int
	st  unix.Stat_t
	id  fileID
}

// path is name's path in its tree, or d's own when name is "".
func (d *dir) path(name string) string { return filepath.Join(d.t.root, d.rel, name) }

func (d *dir) errAt(name, op string, err error) error {
	return &Error{Path: d.path(name), Op: op, Err: err}
}

func (d *dir) close() {
	if d != nil && d.fd >= 0 {
		unix.Close(d.fd)
		d.fd = -1
	}
}

// lstat stats name in d without following it; nil when d is nil or name
// does not exist.
func (d *dir) lstat(name string) (*unix.Stat_t, error) {
	if d == nil {
		return nil, nil
	}
	var st unix.Stat_t
	err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == unix.ENOENT || err == unix.ENOTDIR {
		return nil, nil
	} else if err != nil {
		return nil, d.errAt(name, "lstat", err)
	}
	return &st, nil
}

const openDir = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC

func (m *merger) openRoot(p string) (*dir, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return nil, &Error{Path: p, Op: "open", Err: err}
	}
	fd, err := unix.Open(abs, openDir, 0)
	if err != nil {
		return nil, &Error{Path: abs, Op: "open", Err: err}
	}
	d := &dir{t: &input{root: abs}, fd: fd}
	if err := unix.Fstat(fd, &d.st); err != nil {
		unix.Close(fd)
		return nil, d.errAt("", "fstat", err)
	}
	d.id = fileID{d.st.Dev, d.st.Ino}
	return d, nil
}

// openSub opens the directory name of d. want, when not nil, is what an
// earlier lstat found there: the directory opened must be that inode. A
// directory that is the root of another input is refused.
func (m *merger) openSub(d *dir, name string, want *unix.Stat_t) (*dir, error) {
	fd, err := unix.Openat(d.fd, name, openDir, 0)
	if err != nil {
		return nil, d.errAt(name, "open", err)
	}
	sub := &dir{t: d.t, rel: filepath.Join(d.rel, name), fd: fd}
	if err := unix.Fstat(fd, &sub.st); err != nil {
		sub.close()
		return nil, d.errAt(name, "fstat", err)
	}
	sub.id = fileID{sub.st.Dev, sub.st.Ino}
	if want != nil && (want.Dev != sub.st.Dev || want.Ino != sub.st.Ino) {
		sub.close()
		return nil, d.errAt(name, "open", errors.New("changed during the merge"))
	}
	if slices.Contains(m.roots[:], sub.id) {
		sub.close()
		return nil, d.errAt(name, "open", fmt.Errorf("%w: the root of another input lies here", ErrOverlap))
	}
	return sub, nil
}
