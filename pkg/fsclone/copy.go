package fsclone

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// maxCopyChunk bounds one copy_file_range call (the kernel caps a call near
// 2GB anyway).
const maxCopyChunk = 1 << 30

// bufPool holds the buffers of the userspace copy, used when the kernel
// cannot copy_file_range between the two files.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// copyNew creates dst and copies size bytes of sf into it; on error dst is
// removed.
func copyNew(sf *os.File, dst string, size int64) error {
	df, err := createDst(dst)
	if err != nil {
		return err
	}
	if err := copyData(df, sf, size); err != nil {
		discard(df)
		return err
	}
	return finish(df)
}

// copyData copies the first size bytes of sf into the empty file df,
// keeping sf's holes: only the data segments that SEEK_DATA/SEEK_HOLE find
// are copied, and the final size is set with ftruncate. On a filesystem
// without SEEK_DATA the whole file is one data segment.
func copyData(df, sf *os.File, size int64) error {
	sfd := int(sf.Fd())
	c := copier{df: df, sf: sf, cfr: true}
	for off := int64(0); off < size; {
		start, err := unix.Seek(sfd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole from off to the end
		}
		end := size
		if err != nil {
			// No SEEK_DATA here (EINVAL): copy everything left.
			start = off
		} else if hole, err := unix.Seek(sfd, start, unix.SEEK_HOLE); err == nil && hole < size {
			end = hole
		}
		if start >= size {
			break // the file grew since it was measured
		}
		if err := c.copyRange(start, end-start); err != nil {
			return err
		}
		off = end
	}
	if err := df.Truncate(size); err != nil {
		return err
	}
	return nil
}

// copier copies ranges between two files at the same offsets.
type copier struct {
	df, sf *os.File
	// cfr: copy_file_range still worth trying between these two files.
	cfr bool
}

// copyRange copies n bytes at off from sf to the same offset in df, with
// copy_file_range (which stays in the kernel, and on a filesystem that can
// may share extents), else through a userspace buffer.
func (c *copier) copyRange(off, n int64) error {
	for c.cfr && n > 0 {
		roff, woff := off, off
		done, err := unix.CopyFileRange(int(c.sf.Fd()), &roff, int(c.df.Fd()), &woff, int(min(n, maxCopyChunk)), 0)
		switch {
		case err == nil && done == 0:
			return fmt.Errorf("%s: shrank while being copied", c.sf.Name())
		case err == nil:
			off += int64(done)
			n -= int64(done)
		case errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) ||
			errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM):
			// Not possible between these files (across filesystems on many
			// kernels, or a filesystem without it): copy in userspace.
			c.cfr = false
		default:
			return &os.PathError{Op: "copy_file_range", Path: c.df.Name(), Err: err}
		}
	}
	if n == 0 {
		return nil
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	done, err := io.CopyBuffer(io.NewOffsetWriter(c.df, off), io.NewSectionReader(c.sf, off, n), *bp)
	if err != nil {
		return err
	}
	if done < n {
		return fmt.Errorf("%s: shrank while being copied", c.sf.Name())
	}
	return nil
}
