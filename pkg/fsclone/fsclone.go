// Package fsclone clones one regular file at a time the cheapest way the
// filesystems allow: a reflink (FICLONE, the two files share extents
// copy-on-write), else a hardlink (the two names share one inode), else a
// copy. It is how a deployment shares file data with the unified store
// (DESIGN.md invariant 1).
//
// Lifecycle: New makes a Cloner for one job (one deployment being written)
// with a Mode; Probe, once per (source filesystem, destination filesystem)
// pair, finds what those two filesystems can do and caches it (in Auto,
// Clone probes by itself on first use of a pair, with the file being cloned,
// so calling Probe is only needed to report or check capabilities up front;
// the explicit modes just try their method); Clone is then called for every
// file, from as many goroutines as wanted; Stats tells at the end how many
// files and bytes each method moved.
//
// What a clone carries: only the file's content. A reflinked or copied file
// is a new inode created with mode 0600 and owned by the caller, without the
// source's owner, mode, extended attributes or times: the caller sets them.
// A hardlinked file IS the source inode, so the caller must not chmod,
// chown, touch or write it — that would change the store's file and every
// other deployment's. Clone never fsyncs; the caller syncs the finished
// tree (syncfs) before making it visible.
//
// The capability cache is keyed by st_dev and lives as long as the Cloner:
// a device number can be reused by a different filesystem after an unmount,
// so a Cloner should not outlive the job it was made for.
package fsclone

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/docker/go-units"
	"golang.org/x/sys/unix"
)

// ErrUnsupported is wrapped by the errors of Clone when the Mode asks for a
// method that the filesystems cannot do for that file (reflink on a
// filesystem without reflink, hardlink across filesystems). It also matches
// errors.ErrUnsupported.
var ErrUnsupported error = unsupportedError{}

type unsupportedError struct{}

func (unsupportedError) Error() string        { return "not supported here" }
func (unsupportedError) Is(target error) bool { return target == errors.ErrUnsupported }

// Mode is the policy a Cloner follows.
type Mode int

const (
	// Auto uses the cheapest method possible for each file: reflink, else
	// hardlink (only when the caller allows sharing the inode), else copy.
	Auto Mode = iota
	// Reflink only reflinks; any file that cannot be reflinked is an error.
	Reflink
	// Hardlink hardlinks shareable files and copies the others (a hardlink
	// is never allowed for them); a shareable file that cannot be
	// hardlinked is an error.
	Hardlink
	// Copy always copies the bytes. The kernel may still share extents when
	// source and destination are on one filesystem that can (copy_file_range
	// on XFS or btrfs reflinks); the result is an independent file either way.
	Copy
)

var modeNames = [...]string{Auto: "auto", Reflink: "reflink", Hardlink: "hardlink", Copy: "copy"}

// String returns the name ParseMode accepts: "auto", "reflink", "hardlink"
// or "copy".
func (m Mode) String() string {
	if m >= 0 && int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode parses "auto", "reflink", "hardlink" or "copy" (as on a command
// line), ignoring case.
func ParseMode(s string) (Mode, error) {
	for m, name := range modeNames {
		if strings.EqualFold(s, name) {
			return Mode(m), nil
		}
	}
	return Auto, fmt.Errorf("invalid clone mode %q: want one of %s", s, strings.Join(modeNames[:], ", "))
}

// Method is how one file was cloned. It indexes Stats.Files and Stats.Bytes.
type Method int

const (
	// MethodReflink: a new inode sharing the source's extents copy-on-write.
	MethodReflink Method = iota
	// MethodHardlink: a new name for the source's inode.
	MethodHardlink
	// MethodCopy: a new inode with the bytes copied (holes kept).
	MethodCopy

	numMethods = 3
)

var methodNames = [numMethods]string{"reflink", "hardlink", "copy"}

// String returns "reflink", "hardlink" or "copy".
func (m Method) String() string {
	if m >= 0 && m < numMethods {
		return methodNames[m]
	}
	return fmt.Sprintf("Method(%d)", int(m))
}

// Stats counts what a Cloner did, indexed by Method. Bytes are the logical
// sizes of the files cloned (a sparse file counts its holes; a reflink or a
// hardlink counts bytes that were not written at all).
type Stats struct {
	Files [numMethods]int64
	Bytes [numMethods]int64
}

// String summarises s on one line, such as
// "reflink 120 files 30.2MB, hardlink 0, copy 3 files 1.1kB".
func (s Stats) String() string {
	parts := make([]string, 0, numMethods)
	for m := range Method(numMethods) {
		if s.Files[m] == 0 {
			parts = append(parts, m.String()+" 0")
			continue
		}
		unit := "files"
		if s.Files[m] == 1 {
			unit = "file"
		}
		parts = append(parts, fmt.Sprintf("%s %d %s %s", m, s.Files[m], unit, units.HumanSize(float64(s.Bytes[m]))))
	}
	return strings.Join(parts, ", ")
}

// Capabilities is what can be done between a source and a destination
// filesystem.
type Capabilities struct {
	// Reflink: FICLONE from the source filesystem to the destination works.
	Reflink bool
	// Hardlink: both are the same filesystem (same st_dev), so link(2) can
	// work. It may still fail for one file (EXDEV across bind mounts, EMLINK
	// at the link-count limit); Auto then copies.
	Hardlink bool
}

// devPair keys the capability cache: the st_dev of the source and the
// destination filesystems.
type devPair struct{ src, dst uint64 }

// Cloner clones files under one Mode and counts what it did. It is safe for
// concurrent use. The zero value is not usable; call New.
type Cloner struct {
	mode Mode

	mu   sync.RWMutex
	caps map[devPair]Capabilities

	files [numMethods]atomic.Int64
	bytes [numMethods]atomic.Int64
}

// New returns a Cloner that follows mode.
func New(mode Mode) *Cloner {
	return &Cloner{mode: mode, caps: make(map[devPair]Capabilities)}
}

// Mode returns the mode c was made with.
func (c *Cloner) Mode() Mode { return c.mode }

// Stats returns what c has done so far.
func (c *Cloner) Stats() Stats {
	var s Stats
	for m := range numMethods {
		s.Files[m] = c.files[m].Load()
		s.Bytes[m] = c.bytes[m].Load()
	}
	return s
}

// Clone creates dst, which must not exist, with the content of the regular
// file src, and returns the method it used.
//
// shared reports whether the caller allows dst to be the same inode as src
// (read-only content such as /usr). With shared false (mutable content such
// as /etc) the result is always a new inode: a reflink or a copy.
//
// In Auto the order is reflink, hardlink (if shared), copy, also falling
// back at run time when the kernel refuses one file (FICLONE failing with
// EOPNOTSUPP, EXDEV, EINVAL or ENOTTY; link failing with EXDEV, EMLINK or
// EPERM). In Reflink and Hardlink mode a method that is impossible is an
// error wrapping ErrUnsupported; nothing falls back silently. (Hardlink mode
// copies the files that are not shared: for them a hardlink is not a
// possible outcome at all.) Copy mode always copies.
//
// A new inode (reflink, copy) has mode 0600 and nothing of src but its
// content; a hardlink is src's inode and must not be changed (see the
// package comment). On error dst does not exist (unless it existed before),
// the Method returned is the one that failed, nothing is counted in Stats,
// and the error names both paths.
func (c *Cloner) Clone(src, dst string, shared bool) (Method, error) {
	m, size, err := c.clone(src, dst, shared)
	if err != nil {
		return m, fmt.Errorf("cloning %s to %s: %w", src, dst, err)
	}
	c.files[m].Add(1)
	c.bytes[m].Add(size)
	return m, nil
}

// LinkAt is a fast path for callers that walk trees by directory file
// descriptor and already hold the source's stat (pkg/deploy): when this
// Cloner would hardlink a shared file from the filesystem st.Dev to dstDev
// anyway — Hardlink mode, or Auto once a Clone found no reflinks but
// hardlinks there — it links srcName in srcDir as dstName in dstDir with
// linkat(2) and counts it, sparing Clone's open, stats and path lookups.
// ok is false, with no error, when the caller must use Clone instead
// (nothing known yet, reflinks possible, or linkat refused with EXDEV,
// EMLINK or EPERM).
func (c *Cloner) LinkAt(srcDir int, srcName string, st *unix.Stat_t, dstDir int, dstName string, dstDev uint64) (ok bool, err error) {
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false, nil
	}
	switch c.mode {
	case Hardlink:
	case Auto:
		c.mu.RLock()
		caps, known := c.caps[devPair{st.Dev, dstDev}]
		c.mu.RUnlock()
		if !known || caps.Reflink || !caps.Hardlink {
			return false, nil
		}
	default:
		return false, nil
	}
	if err := unix.Linkat(srcDir, srcName, dstDir, dstName, 0); err != nil {
		if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EMLINK) || errors.Is(err, unix.EPERM) {
			return false, nil
		}
		return false, fmt.Errorf("linking %s: %w", srcName, err)
	}
	c.files[MethodHardlink].Add(1)
	c.bytes[MethodHardlink].Add(st.Size)
	return true, nil
}

func (c *Cloner) clone(src, dst string, shared bool) (Method, int64, error) {
	// O_NONBLOCK: opening a FIFO must fail the regular-file check below,
	// not hang. O_NOFOLLOW: a symlink is not a regular file either.
	sf, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return MethodCopy, 0, err
	}
	defer sf.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(sf.Fd()), &st); err != nil {
		return MethodCopy, 0, fmt.Errorf("stat %s: %w", src, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return MethodCopy, 0, fmt.Errorf("%s is not a regular file", src)
	}
	size := st.Size

	switch c.mode {
	case Reflink:
		df, err := createDst(dst)
		if err != nil {
			return MethodReflink, 0, err
		}
		if err := ficlone(df, sf); err != nil {
			discard(df)
			if reflinkUnsupported(err) {
				return MethodReflink, 0, fmt.Errorf("reflink %w: %w", ErrUnsupported, err)
			}
			return MethodReflink, 0, err
		}
		return MethodReflink, size, finish(df)

	case Hardlink:
		if !shared {
			return MethodCopy, size, copyNew(sf, dst, size)
		}
		if err := unix.Link(src, dst); err != nil {
			if errors.Is(err, unix.EXDEV) {
				return MethodHardlink, 0, fmt.Errorf("hardlink %w: link: %w", ErrUnsupported, err)
			}
			return MethodHardlink, 0, fmt.Errorf("link: %w", err)
		}
		return MethodHardlink, size, nil

	case Copy:
		return MethodCopy, size, copyNew(sf, dst, size)

	case Auto: // below
	default:
		return MethodCopy, 0, fmt.Errorf("invalid clone mode %v", c.mode)
	}

	caps, err := c.capsFor(sf, st.Dev, dst)
	if err != nil {
		return MethodCopy, 0, err
	}
	var df *os.File // created by a reflink attempt that failed; reused by the copy
	if caps.Reflink {
		if df, err = createDst(dst); err != nil {
			return MethodReflink, 0, err
		}
		err := ficlone(df, sf)
		if err == nil {
			return MethodReflink, size, finish(df)
		}
		if !reflinkUnsupported(err) {
			discard(df)
			return MethodReflink, 0, err
		}
		if shared && caps.Hardlink {
			discard(df)
			df = nil
		}
	}
	if shared && caps.Hardlink {
		err := unix.Link(src, dst)
		if err == nil {
			return MethodHardlink, size, nil
		}
		if !errors.Is(err, unix.EXDEV) && !errors.Is(err, unix.EMLINK) && !errors.Is(err, unix.EPERM) {
			return MethodHardlink, 0, fmt.Errorf("link: %w", err)
		}
	}
	if df == nil {
		if df, err = createDst(dst); err != nil {
			return MethodCopy, 0, err
		}
	}
	if err := copyData(df, sf, size); err != nil {
		discard(df)
		return MethodCopy, 0, err
	}
	return MethodCopy, size, finish(df)
}

// capsFor returns the cached capabilities between the filesystem of src
// (open as sf, on device srcDev) and that of dst's parent directory,
// probing with sf itself on a miss so that the source filesystem need not
// be writable.
func (c *Cloner) capsFor(sf *os.File, srcDev uint64, dst string) (Capabilities, error) {
	dstDir := filepath.Dir(dst)
	var st unix.Stat_t
	if err := unix.Stat(dstDir, &st); err != nil {
		return Capabilities{}, &os.PathError{Op: "stat", Path: dstDir, Err: err}
	}
	key := devPair{srcDev, st.Dev}
	c.mu.RLock()
	caps, ok := c.caps[key]
	c.mu.RUnlock()
	if ok {
		return caps, nil
	}
	caps, err := probeWith(sf, dstDir, key)
	if err != nil {
		return Capabilities{}, err
	}
	c.mu.Lock()
	c.caps[key] = caps
	c.mu.Unlock()
	return caps, nil
}

// createDst creates dst exclusively, mode 0600, for writing.
func createDst(dst string) (*os.File, error) {
	return os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
}

// finish closes a completed destination file, removing it if that fails.
func finish(f *os.File) error {
	if err := f.Close(); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	return nil
}

// discard closes and removes a destination file that will not be finished.
func discard(f *os.File) {
	_ = f.Close()
	_ = os.Remove(f.Name())
}

// ficlone makes dst share all of src's extents (FICLONE).
func ficlone(dst, src *os.File) error {
	if err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); err != nil {
		return fmt.Errorf("ioctl FICLONE: %w", err)
	}
	return nil
}

// reflinkUnsupported reports whether a FICLONE error means "not possible
// here" rather than a real failure: no reflink support on the filesystem
// (EOPNOTSUPP, ENOTTY), two filesystems (EXDEV), or a file the filesystem
// cannot reflink (EINVAL, such as an XFS realtime or DAX file).
func reflinkUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EXDEV) ||
		errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY)
}
