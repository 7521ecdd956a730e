// Package blockdev lays out a disk for install to-disk: a GPT with bootc's
// partitions, a loop device per partition, file systems on them.
//
// Lifecycle: Partition writes the table (sgdisk) and returns where each
// partition lies; Attach gives each a loop device at its offset (so it
// works the same for image files and block devices, and in containers,
// where loop devices get no partition devices); Mkfs formats them; Detach
// releases the loops. Nothing here mounts.
package blockdev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrInUse is returned when the target holds a partition table or a file
// system and wiping was not asked for.
var ErrInUse = errors.New("target disk is not empty")

// SectorSize is the logical sector size the layout assumes.
const SectorSize = 512

// Partition is one partition of the layout, in sectors.
type Partition struct {
	Number        int
	Name          string
	TypeCode      string // sgdisk type code
	Start, Length int64
	// Loop is its loop device once attached.
	Loop string
}

// Layout is bootc's to-disk layout: BIOS boot (1 MiB), ESP (512 MiB),
// /boot (1 GiB), root (the rest).
type Layout struct {
	BIOSBoot, ESP, Boot, Root Partition
}

// Partitions returns the layout's partitions in table order.
func (l *Layout) Partitions() []*Partition {
	return []*Partition{&l.BIOSBoot, &l.ESP, &l.Boot, &l.Root}
}

const mib = 1 << 20 / SectorSize

// Size returns the size of a disk or image file in bytes.
func Size(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Mode().IsRegular() {
		return fi.Size(), nil
	}
	if fi.Mode()&os.ModeDevice == 0 {
		return 0, fmt.Errorf("%s is neither a block device nor a file", path)
	}
	size, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKGETSIZE64)
	if err != nil {
		return 0, fmt.Errorf("reading the size of %s: %w", path, err)
	}
	return int64(size), nil
}

// CheckEmpty refuses a disk whose first sectors hold an MBR signature or a
// GPT header.
func CheckEmpty(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 2*SectorSize)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if buf[510] == 0x55 && buf[511] == 0xaa || string(buf[SectorSize:SectorSize+8]) == "EFI PART" {
		return fmt.Errorf("%w: %s has a partition table (use --wipe to erase it)", ErrInUse, path)
	}
	return nil
}

// Partition writes a new GPT with the layout to disk, erasing what was
// there.
func PartitionDisk(ctx context.Context, disk string) (*Layout, error) {
	size, err := Size(disk)
	if err != nil {
		return nil, err
	}
	total := size / SectorSize
	l := &Layout{
		BIOSBoot: Partition{Number: 1, Name: "BIOS-BOOT", TypeCode: "EF02", Start: 1 * mib, Length: 1 * mib},
		ESP:      Partition{Number: 2, Name: "EFI-SYSTEM", TypeCode: "EF00", Start: 2 * mib, Length: 512 * mib},
		Boot:     Partition{Number: 3, Name: "boot", TypeCode: "8300", Start: 514 * mib, Length: 1024 * mib},
	}
	rootStart := int64(1538 * mib)
	// The backup GPT takes the last 33 sectors; keep the root 1 MiB aligned.
	rootEnd := (total - 34) / mib * mib
	if rootEnd-rootStart < 1024*mib {
		return nil, fmt.Errorf("%s is %d MiB: too small for the layout (at least 2.6 GiB)", disk, size>>20)
	}
	l.Root = Partition{Number: 4, Name: "root", TypeCode: "8304", Start: rootStart, Length: rootEnd - rootStart}
	args := []string{"--zap-all", "--clear"}
	for _, p := range l.Partitions() {
		args = append(args,
			fmt.Sprintf("--new=%d:%d:%d", p.Number, p.Start, p.Start+p.Length-1),
			fmt.Sprintf("--typecode=%d:%s", p.Number, p.TypeCode),
			fmt.Sprintf("--change-name=%d:%s", p.Number, p.Name))
	}
	args = append(args, disk)
	if err := run(ctx, "sgdisk", args...); err != nil {
		return nil, fmt.Errorf("partitioning %s: %w", disk, err)
	}
	return l, nil
}

// Attach gives p a loop device over its sectors of disk.
func Attach(ctx context.Context, disk string, p *Partition) error {
	out, err := output(ctx, "losetup", "--find", "--show",
		"--offset", strconv.FormatInt(p.Start*SectorSize, 10),
		"--sizelimit", strconv.FormatInt(p.Length*SectorSize, 10), disk)
	if err != nil {
		return fmt.Errorf("attaching partition %d of %s: %w", p.Number, disk, err)
	}
	p.Loop = strings.TrimSpace(out)
	return nil
}

// Detach releases p's loop device, if any.
func Detach(p *Partition) error {
	if p.Loop == "" {
		return nil
	}
	if err := run(context.Background(), "losetup", "--detach", p.Loop); err != nil {
		return err
	}
	p.Loop = ""
	return nil
}

// Verity is a file system feature Mkfs can be asked for: fs-verity (ext4
// needs it at mkfs time, btrfs always has it, xfs has none).
const Verity = "verity"

// Mkfs makes a file system of the type fstype (xfs, ext4, btrfs, vfat)
// with the label and features on dev and returns its UUID.
func Mkfs(ctx context.Context, dev, fstype, label string, features ...string) (string, error) {
	var args []string
	for _, f := range features {
		if f != Verity {
			return "", fmt.Errorf("unknown file system feature %q", f)
		}
		if fstype != "ext4" && fstype != "btrfs" {
			return "", fmt.Errorf("%s has no fs-verity: use ext4 or btrfs", fstype)
		}
	}
	switch fstype {
	case "xfs":
		args = []string{"mkfs.xfs", "-f", "-q", "-m", "reflink=1", "-L", label, dev}
	case "ext4":
		args = []string{"mkfs.ext4", "-F", "-q", "-L", label}
		for _, f := range features {
			args = append(args, "-O", f)
		}
		args = append(args, dev)
	case "btrfs":
		args = []string{"mkfs.btrfs", "-f", "-q", "-L", label, dev}
	case "vfat":
		// -I: dev is a loop device over one partition, never a whole disk;
		// stale partition mappings of a reused loop device must not stop it.
		args = []string{"mkfs.vfat", "-I", "-n", label, dev}
	default:
		return "", fmt.Errorf("unknown file system %q: want xfs, ext4 or btrfs", fstype)
	}
	if err := run(ctx, args[0], args[1:]...); err != nil {
		return "", fmt.Errorf("making %s on %s: %w", fstype, dev, err)
	}
	out, err := output(ctx, "blkid", "--probe", "-s", "UUID", "-o", "value", dev)
	if err != nil {
		return "", fmt.Errorf("reading the UUID of %s: %w", dev, err)
	}
	return strings.TrimSpace(out), nil
}

func run(ctx context.Context, name string, args ...string) error {
	_, err := output(ctx, name, args...)
	return err
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", name, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out), nil
}
