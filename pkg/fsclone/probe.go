package fsclone

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// probeSize is the size of the probe's source file: one full block, so that
// no filesystem keeps it inline in the inode, where reflink rules differ.
const probeSize = 4096

// Probe reports what can be done between the filesystem holding srcDir and
// the one holding dstDir, and caches the answer for Clone (keyed by the two
// st_dev, so it runs once per pair of filesystems).
//
// Reflink is tried for real: a small unnamed file (O_TMPFILE, or a file
// removed at once where O_TMPFILE is not supported) is written in srcDir
// and cloned with FICLONE into an unnamed file in dstDir; both vanish when
// closed, so nothing is left behind even by a crash. FICLONE failing with
// EOPNOTSUPP, EXDEV, EINVAL or ENOTTY means no reflink; any other failure
// is an error. Hardlink is possible when both directories are on the same
// st_dev. Both directories must be writable.
func (c *Cloner) Probe(srcDir, dstDir string) (Capabilities, error) {
	var sst, dst unix.Stat_t
	if err := unix.Stat(srcDir, &sst); err != nil {
		return Capabilities{}, fmt.Errorf("probing %s to %s: %w", srcDir, dstDir, &os.PathError{Op: "stat", Path: srcDir, Err: err})
	}
	if err := unix.Stat(dstDir, &dst); err != nil {
		return Capabilities{}, fmt.Errorf("probing %s to %s: %w", srcDir, dstDir, &os.PathError{Op: "stat", Path: dstDir, Err: err})
	}
	key := devPair{sst.Dev, dst.Dev}
	c.mu.RLock()
	caps, ok := c.caps[key]
	c.mu.RUnlock()
	if ok {
		return caps, nil
	}

	sf, err := createUnnamed(srcDir, os.O_RDWR)
	if err != nil {
		return Capabilities{}, fmt.Errorf("probing %s to %s: %w", srcDir, dstDir, err)
	}
	defer sf.Close()
	var block [probeSize]byte
	for i := range block {
		block[i] = byte(i)
	}
	if _, err := sf.Write(block[:]); err != nil {
		return Capabilities{}, fmt.Errorf("probing %s to %s: writing probe file: %w", srcDir, dstDir, err)
	}
	caps, err = probeWith(sf, dstDir, key)
	if err != nil {
		return Capabilities{}, fmt.Errorf("probing %s to %s: %w", srcDir, dstDir, err)
	}
	c.mu.Lock()
	c.caps[key] = caps
	c.mu.Unlock()
	return caps, nil
}

// probeWith finds the capabilities between the filesystem of sf and that of
// dstDir by cloning sf into an unnamed file in dstDir.
func probeWith(sf *os.File, dstDir string, key devPair) (Capabilities, error) {
	caps := Capabilities{Hardlink: key.src == key.dst}
	df, err := createUnnamed(dstDir, os.O_WRONLY)
	if err != nil {
		return Capabilities{}, err
	}
	defer df.Close()
	switch err := ficlone(df, sf); {
	case err == nil:
		caps.Reflink = true
	case !reflinkUnsupported(err):
		return Capabilities{}, err
	}
	return caps, nil
}

// createUnnamed creates a file in dir that has no name: with O_TMPFILE, or,
// on filesystems without it, as a temporary file removed at once.
func createUnnamed(dir string, flag int) (*os.File, error) {
	f, err := os.OpenFile(dir, flag|unix.O_TMPFILE, 0o600)
	if err == nil {
		return f, nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
		return nil, err
	}
	f, err = os.CreateTemp(dir, ".fsclone-probe-*")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
