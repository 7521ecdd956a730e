// Package erofs writes EROFS filesystem images that hold a tree's metadata
// and, optionally, small files' data: the "composefs" use of EROFS, where a
// regular file carries overlayfs redirect and metacopy xattrs and no data,
// and overlayfs takes its content from a data-only lower layer.
//
// # Lifecycle
//
// The caller builds an in-memory tree of [Inode]s (a directory lists its
// [Dirent]s; one *Inode named by several Dirents is a hardlink) and calls
// [Write], which
//
//  1. numbers the inodes in a depth-first walk of the names sorted bytewise,
//     each inode at its first name, and counts links;
//  2. moves xattrs that more than one inode carries to the shared xattr area;
//  3. sizes every inode's on-disk record (inode, inline xattrs, inline tail
//     or chunk map) and places the records one after another in the
//     metadata area, none crossing a block boundary it need not cross;
//  4. places the full data blocks (directory blocks, long symlinks, file
//     data) after the metadata, in the same order;
//  5. encodes the superblock, records, shared xattrs and blocks.
//
// Nothing depends on the time of the call, map order or addresses: the same
// tree gives the same bytes.
//
// # On-disk format
//
// The format is the Linux kernel's (fs/erofs/erofs_fs.h), 4 KiB blocks,
// without compression. The superblock is at byte 1024; the metadata area
// starts at block 0 (meta_blkaddr 0), so an inode's nid is its byte offset
// divided by 32; the shared xattr area follows the inodes (xattr_blkaddr 0,
// an xattr's id is its byte offset divided by 4). Inodes are compact (32
// bytes) when owner, link count, size and mtime allow it (the mtime must
// equal the superblock's build time, the most common mtime of the tree) and
// extended (64 bytes) otherwise. Data is FLAT_INLINE (full blocks in the
// data area, the tail right after the inode) when the tail fits the
// inode's block, else FLAT_PLAIN. A regular file without data is
// CHUNK_BASED with one chunk whose block map entry is EROFS_NULL_ADDR: it
// reads as zeros and takes no blocks, the layout composefs uses.
package erofs

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/sys/unix"
)

// Inode is one file of the tree.
type Inode struct {
	// Mode holds the type (unix.S_IFREG, S_IFDIR, ...) and permission bits.
	Mode     uint32
	UID, GID uint32
	// Mtime is seconds since the epoch; MtimeNsec the nanoseconds.
	Mtime     int64
	MtimeNsec uint32
	// Rdev is a character or block device's number (unix.Mkdev).
	Rdev uint64
	// Size is a regular file's size when Data is nil: the file has no data
	// in the image (it reads as zeros) and takes no blocks.
	Size uint64
	// Data is a regular file's content, stored in the image.
	Data []byte
	// Target is a symlink's target.
	Target string
	// Xattrs are the extended attributes; names must start with user.,
	// trusted. or security., or be system.posix_acl_access/default.
	Xattrs []Xattr
	// Entries are a directory's names, without "." and "..", in any order.
	Entries []Dirent
}

// Dirent names an inode in a directory.
type Dirent struct {
	Name  string
	Inode *Inode
}

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// ErrInvalid is wrapped by errors about a tree that cannot be written.
var ErrInvalid = errors.New("invalid tree")

// Stats describes a written image.
type Stats struct {
	Inodes int64 // distinct inodes
	Bytes  int64 // image size
}

// Write encodes the tree below root (a directory) as an EROFS image.
func Write(w io.Writer, root *Inode) (Stats, error) {
	img, err := build(root)
	if err != nil {
		return Stats{}, err
	}
	out := img.encode()
	if _, err := w.Write(out); err != nil {
		return Stats{}, fmt.Errorf("erofs: writing image: %w", err)
	}
	return Stats{Inodes: int64(len(img.nodes)), Bytes: int64(len(out))}, nil
}

// invalid builds an ErrInvalid error about the image path p.
func invalid(p, format string, args ...any) error {
	return fmt.Errorf("erofs: %s: %w: %s", p, ErrInvalid, fmt.Sprintf(format, args...))
}

// Xattr name prefixes and their on-disk indexes (erofs_fs.h's
// EROFS_XATTR_INDEX_*); the ACL names are whole names.
var xattrPrefixes = []struct {
	prefix string
	index  uint8
}{
	{"user.", 1},
	{"system.posix_acl_access", 2},
	{"system.posix_acl_default", 3},
	{"trusted.", 4},
	{"security.", 6},
}

// splitXattrName returns the name index and the suffix stored on disk.
func splitXattrName(name string) (uint8, string, bool) {
	for _, p := range xattrPrefixes {
		if suffix, ok := strings.CutPrefix(name, p.prefix); ok {
			if p.index == 2 || p.index == 3 {
				if suffix != "" {
					continue
				}
			} else if suffix == "" {
				return 0, "", false
			}
			return p.index, suffix, true
		}
	}
	return 0, "", false
}

// fileType is the dirent file_type of a mode (the kernel's FT_*).
func fileType(mode uint32) uint8 {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return 1
	case unix.S_IFDIR:
		return 2
	case unix.S_IFCHR:
		return 3
	case unix.S_IFBLK:
		return 4
	case unix.S_IFIFO:
		return 5
	case unix.S_IFSOCK:
		return 6
	case unix.S_IFLNK:
		return 7
	}
	return 0
}

// encodeDev is the kernel's new_encode_dev: 12-bit major, 20-bit minor.
func encodeDev(rdev uint64) uint32 {
	major, minor := unix.Major(rdev), unix.Minor(rdev)
	return minor&0xff | major<<8 | (minor&^0xff)<<12
}
