package fsclone

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The FIEMAP ioctl (linux/fiemap.h, Documentation/filesystems/fiemap.rst),
// which golang.org/x/sys/unix does not wrap.
const (
	// fsIocFiemap is FS_IOC_FIEMAP, _IOWR('f', 11, struct fiemap). Its value
	// is the same on every Linux architecture: where the direction bits
	// differ (powerpc, mips, sparc) read|write still encodes as 0xC0000000.
	fsIocFiemap = 0xC020660B

	fiemapFlagSync = 0x1 // FIEMAP_FLAG_SYNC: flush delayed allocation first

	fiemapExtentLast       = 0x1   // FIEMAP_EXTENT_LAST: the file's last extent
	fiemapExtentUnknown    = 0x2   // FIEMAP_EXTENT_UNKNOWN: no physical location yet
	fiemapExtentDelalloc   = 0x4   // FIEMAP_EXTENT_DELALLOC: delayed allocation
	fiemapExtentEncoded    = 0x8   // FIEMAP_EXTENT_ENCODED: compressed or encrypted
	fiemapExtentDataInline = 0x200 // FIEMAP_EXTENT_DATA_INLINE: in the metadata
	fiemapExtentDataTail   = 0x400 // FIEMAP_EXTENT_DATA_TAIL: packed with others

	// fiemapNoPhysical marks extents whose fe_physical is no block address.
	fiemapNoPhysical = fiemapExtentUnknown | fiemapExtentDelalloc | fiemapExtentEncoded |
		fiemapExtentDataInline | fiemapExtentDataTail

	// fiemapBatch is how many extents one ioctl call returns at most.
	fiemapBatch = 128
)

// fiemapHdr is struct fiemap without its flexible array of extents.
type fiemapHdr struct {
	Start         uint64 // fm_start: logical offset to map from
	Length        uint64 // fm_length: logical length to map
	Flags         uint32 // fm_flags: FIEMAP_FLAG_*
	MappedExtents uint32 // fm_mapped_extents: extents filled in by the kernel
	ExtentCount   uint32 // fm_extent_count: room in Extents
	_             uint32 // fm_reserved
}

// fiemapExtent is struct fiemap_extent.
type fiemapExtent struct {
	Logical  uint64 // fe_logical: byte offset in the file
	Physical uint64 // fe_physical: byte offset on the device
	Length   uint64 // fe_length: bytes
	_        [2]uint64
	Flags    uint32 // fe_flags: FIEMAP_EXTENT_*
	_        [3]uint32
}

// fiemapBuf is struct fiemap with room for fiemapBatch extents, laid out as
// the kernel expects (a 32-byte header, then 56-byte extents).
type fiemapBuf struct {
	hdr     fiemapHdr
	extents [fiemapBatch]fiemapExtent
}

// Compile-time checks of the C layout.
var (
	_ [32 - unsafe.Sizeof(fiemapHdr{})]struct{}
	_ [unsafe.Sizeof(fiemapHdr{}) - 32]struct{}
	_ [56 - unsafe.Sizeof(fiemapExtent{})]struct{}
	_ [unsafe.Sizeof(fiemapExtent{}) - 56]struct{}
)

// physRange is a byte range on the device.
type physRange struct{ start, end uint64 }

// physicalExtents returns where the data of the file at path lies on its
// device, sorted, leaving out extents without a physical address (inline,
// encoded, not yet allocated).
func physicalExtents(path string) ([]physRange, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf fiemapBuf
	var out []physRange
	for start := uint64(0); ; {
		buf.hdr = fiemapHdr{Start: start, Length: ^uint64(0) - start, Flags: fiemapFlagSync, ExtentCount: fiemapBatch}
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocFiemap, uintptr(unsafe.Pointer(&buf)))
		if errno != 0 {
			return nil, &os.PathError{Op: "ioctl FS_IOC_FIEMAP", Path: path, Err: errno}
		}
		n := buf.hdr.MappedExtents
		if n == 0 {
			break
		}
		last := false
		for _, e := range buf.extents[:n] {
			if e.Flags&fiemapNoPhysical == 0 && e.Length > 0 {
				out = append(out, physRange{e.Physical, e.Physical + e.Length})
			}
			last = e.Flags&fiemapExtentLast != 0
			start = e.Logical + e.Length
		}
		if last {
			break
		}
	}
	slices.SortFunc(out, func(a, b physRange) int { return cmp.Compare(a.start, b.start) })
	return out, nil
}

// SharesExtents reports whether the files a and b have data in the same
// physical blocks, as reflinked files do until one of them is rewritten
// (and as two names of one inode always do). It asks the filesystem with
// FIEMAP (flushing delayed allocations first) and compares the physical
// byte ranges of the two files' extents; extents without a physical
// address (inline, encoded, unallocated) are ignored, so empty files and
// files stored inline share nothing.
func SharesExtents(a, b string) (bool, error) {
	ea, err := physicalExtents(a)
	if err != nil {
		return false, fmt.Errorf("mapping extents of %s: %w", a, err)
	}
	eb, err := physicalExtents(b)
	if err != nil {
		return false, fmt.Errorf("mapping extents of %s: %w", b, err)
	}
	// Both lists are sorted by start; walk them together looking for an
	// overlap.
	for i, j := 0, 0; i < len(ea) && j < len(eb); {
		if ea[i].start < eb[j].end && eb[j].start < ea[i].end {
			return true, nil
		}
		if ea[i].end <= eb[j].end {
			i++
		} else {
			j++
		}
	}
	return false, nil
}
