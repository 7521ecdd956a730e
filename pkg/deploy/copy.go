package deploy

import (
	"fmt"
	"io"

	"golang.org/x/sys/unix"
)

// copyFile copies name from the directory srcDir to a new file of the same
// name in dstDir, keeping holes. It is the copy used without a Cloner, and
// for mutable files always. private forbids copy_file_range, which XFS and
// btrfs turn into a reflink: mutable files share no data with the layers.
func copyFile(srcDir, dstDir int, name string, private bool) (err error) {
	in, err := unix.Openat(srcDir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(in)
	out, err := unix.Openat(dstDir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := unix.Close(out); err == nil && cerr != nil {
			err = cerr
		}
	}()
	var st unix.Stat_t
	if err := unix.Fstat(in, &st); err != nil {
		return err
	}
	var end int64 // where the data written so far ends
	for off := int64(0); off < st.Size; {
		data, err := unix.Seek(in, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break // only a hole is left
		} else if err != nil {
			data = off // no SEEK_DATA: copy everything
		}
		hole, err := unix.Seek(in, data, unix.SEEK_HOLE)
		if err != nil || hole > st.Size {
			hole = st.Size
		}
		copyFn := copyRange
		if private {
			copyFn = copyRangeRW
		}
		if err := copyFn(in, out, data, hole-data); err != nil {
			return err
		}
		off, end = hole, hole
	}
	if end == st.Size {
		return nil
	}
	// A trailing hole: only the size is left to set. (Truncating a file to
	// its own size is not free on ext4: it is a journal transaction.)
	return unix.Ftruncate(out, st.Size)
}

// copyRange copies n bytes at off from in to the same offset of out.
func copyRange(in, out int, off, n int64) error {
	roff, woff := off, off
	for n > 0 {
		c, err := unix.CopyFileRange(in, &roff, out, &woff, int(min(n, 1<<30)), 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return copyRangeRW(in, out, roff, n)
		}
		if c == 0 {
			return fmt.Errorf("copy: %w", io.ErrUnexpectedEOF)
		}
		n -= int64(c)
	}
	return nil
}

// copyRangeRW is copyRange for file systems without copy_file_range.
func copyRangeRW(in, out int, off, n int64) error {
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		r, err := unix.Pread(in, buf[:min(n, int64(len(buf)))], off)
		if err == unix.EINTR {
			continue
		} else if err != nil {
			return fmt.Errorf("read: %w", err)
		} else if r == 0 {
			return fmt.Errorf("read: %w", io.ErrUnexpectedEOF)
		}
		for w := 0; w < r; {
			c, err := unix.Pwrite(out, buf[w:r], off+int64(w))
			if err == unix.EINTR {
				continue
			} else if err != nil {
				return fmt.Errorf("write: %w", err)
			}
			w += c
		}
		off += int64(r)
		n -= int64(r)
	}
	return nil
}
