package composefs

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fs-verity SHA-256 (FS_VERITY_HASH_ALG_SHA256) with 4 KiB Merkle tree
// blocks: what overlayfs' verity=require compares with the image's digest.
const (
	verityAlgSHA256 = 1
	verityBlockSize = 4096
	sha256Size      = 32
)

// ErrNoVerity is returned by MeasureVerity for a file without fs-verity.
var ErrNoVerity = errors.New("file has no fs-verity")

// ErrVerityUnsupported is returned by EnableVerity where the filesystem or
// the kernel has no fs-verity (ext4 needs mkfs.ext4 -O verity, the kernel
// CONFIG_FS_VERITY).
var ErrVerityUnsupported = errors.New("the filesystem does not support fs-verity")

// EnableVerity turns fs-verity on for the file at p (SHA-256, 4 KiB
// blocks), which makes it immutable. A file that has it already is left
// as it is.
func EnableVerity(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	arg := unix.FsverityEnableArg{Version: 1, Hash_algorithm: verityAlgSHA256, Block_size: verityBlockSize}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.FS_IOC_ENABLE_VERITY, uintptr(unsafe.Pointer(&arg)))
	switch errno {
	case 0, unix.EEXIST:
		return nil
	case unix.EOPNOTSUPP, unix.ENOTTY:
		return fmt.Errorf("enabling fs-verity on %s: %w", p, ErrVerityUnsupported)
	}
	return fmt.Errorf("enabling fs-verity on %s: %w", p, errno)
}

// MeasureVerity returns the fs-verity SHA-256 digest of the file at p, or
// ErrNoVerity.
func MeasureVerity(p string) ([]byte, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var buf struct {
		unix.FsverityDigest
		digest [64]byte
	}
	buf.Size = uint16(len(buf.digest))
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.FS_IOC_MEASURE_VERITY, uintptr(unsafe.Pointer(&buf)))
	switch {
	case errno == unix.ENODATA || errno == unix.ENOTTY || errno == unix.EOPNOTSUPP:
		return nil, fmt.Errorf("%s: %w", p, ErrNoVerity)
	case errno != 0:
		return nil, fmt.Errorf("measuring fs-verity of %s: %w", p, errno)
	case buf.Algorithm != verityAlgSHA256 || buf.Size != sha256Size:
		return nil, fmt.Errorf("%s: fs-verity algorithm %d (%d bytes), want SHA-256", p, buf.Algorithm, buf.Size)
	}
	return append([]byte(nil), buf.digest[:buf.Size]...), nil
}
