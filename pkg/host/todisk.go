package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/pkg/blockdev"
	"github.com/bootstore/bootstore/pkg/bls"
	"github.com/bootstore/bootstore/pkg/bootloader"
	"github.com/bootstore/bootstore/pkg/sysroot"
)

// ErrNeedsLoopback is returned for an image file target without
// --via-loopback.
var ErrNeedsLoopback = errors.New("target is a file")

// ToDiskOptions are install to-disk's settings on top of install
// to-filesystem's.
type ToDiskOptions struct {
	InstallOptions
	// Filesystem of the root partition: xfs (default), ext4 or btrfs.
	Filesystem string
	// ViaLoopback accepts an image file as the target.
	ViaLoopback bool
}

// InstalledDisk reports what InstallToDisk made.
type InstalledDisk struct {
	*Installed
	RootUUID, BootUUID string
}

// InstallToDisk partitions target (bootc's layout: BIOS boot, ESP, /boot,
// root), makes the file systems, installs into them as Install does with
// root=UUID=<root> rw among the kernel arguments and /boot in the
// deployment's /etc/fstab, and installs GRUB from the deployment's own
// files. opts.Wipe erases a target that has a partition table; without it
// such a target is refused.
func InstallToDisk(ctx context.Context, target string, opts ToDiskOptions) (*InstalledDisk, error) {
	fi, err := os.Stat(target)
	if err != nil {
		return nil, fmt.Errorf("install target: %w", err)
	}
	if fi.Mode().IsRegular() && !opts.ViaLoopback {
		return nil, fmt.Errorf("%w: %s (use --via-loopback to install into an image file)", ErrNeedsLoopback, target)
	}
	if fi.Mode()&os.ModeDevice == 0 && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("install target %s is neither a block device nor a file", target)
	}
	if opts.Filesystem == "" {
		opts.Filesystem = "xfs"
	}
	switch opts.Filesystem {
	case "xfs", "ext4", "btrfs":
	default:
		return nil, fmt.Errorf("--filesystem %q: want xfs, ext4 or btrfs", opts.Filesystem)
	}
	var rootFeatures []string
	if opts.Verity {
		// Refused before the disk is touched, rather than when the
		// install first enables fs-verity on a store file.
		if opts.Filesystem == "xfs" {
			return nil, fmt.Errorf("--verity: xfs has no fs-verity: use --filesystem ext4 or btrfs")
		}
		rootFeatures = append(rootFeatures, blockdev.Verity)
	}
	if !opts.Wipe {
		if err := blockdev.CheckEmpty(target); errors.Is(err, blockdev.ErrInUse) {
			return nil, fmt.Errorf("%w: %s has a partition table (use --wipe to erase it)", ErrNotEmpty, target)
		} else if err != nil {
			return nil, err
		}
	}
	layout, err := blockdev.PartitionDisk(ctx, target)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, p := range layout.Partitions() {
			blockdev.Detach(p)
		}
	}()
	for _, p := range []*blockdev.Partition{&layout.ESP, &layout.Boot, &layout.Root} {
		if err := blockdev.Attach(ctx, target, p); err != nil {
			return nil, err
		}
	}
	if _, err := blockdev.Mkfs(ctx, layout.ESP.Loop, "vfat", "EFI-SYSTEM"); err != nil {
		return nil, err
	}
	bootUUID, err := blockdev.Mkfs(ctx, layout.Boot.Loop, "ext4", "boot")
	if err != nil {
		return nil, err
	}
	rootUUID, err := blockdev.Mkfs(ctx, layout.Root.Loop, opts.Filesystem, "root", rootFeatures...)
	if err != nil {
		return nil, err
	}

	mnt, err := os.MkdirTemp("", "bootstore-install-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(mnt)
	if err := unix.Mount(layout.Root.Loop, mnt, opts.Filesystem, 0, ""); err != nil {
		return nil, fmt.Errorf("mounting the root file system: %w", err)
	}
	defer unix.Unmount(mnt, 0)
	bootDir := filepath.Join(mnt, "boot")
	if err := os.Mkdir(bootDir, 0o755); err != nil {
		return nil, err
	}
	if err := unix.Mount(layout.Boot.Loop, bootDir, "ext4", 0, ""); err != nil {
		return nil, fmt.Errorf("mounting /boot: %w", err)
	}
	defer unix.Unmount(bootDir, 0)
	// Before Install, so its boot entries come with a GRUB menu.
	if err := bls.InstallGrubConfigLink(mnt); err != nil {
		return nil, err
	}

	inst := opts.InstallOptions
	inst.Kargs = append([]string{"root=UUID=" + rootUUID, "rw"}, opts.Kargs...)
	inst.Wipe = false
	res, err := Install(ctx, mnt, inst)
	if err != nil {
		return nil, err
	}
	sr, err := sysroot.New(mnt)
	if err != nil {
		return nil, err
	}
	deployment := sr.DeploymentPath(res.Deployed.Deployment)
	if err := addBootToFstab(deployment, bootUUID); err != nil {
		return nil, err
	}
	if err := installGrub(ctx, sr, res.Deployed.Deployment, target, bootDir, bootUUID, layout, opts.Warn); err != nil {
		return nil, err
	}
	unix.Sync()
	return &InstalledDisk{Installed: res, RootUUID: rootUUID, BootUUID: bootUUID}, nil
}

// installGrub installs GRUB for BIOS from the deployment's own GRUB files,
// read through its tree (for a composefs deployment: its image, mounted
// over the store, since the deployment directory holds no /usr).
func installGrub(ctx context.Context, sr *sysroot.Sysroot, d sysroot.Deployment, target, bootDir, bootUUID string, layout *blockdev.Layout, warn io.Writer) error {
	tree := sr.DeploymentPath(d)
	if d.Origin.Composefs != "" {
		st, err := OpenStore(ctx, sr, warn)
		if err != nil {
			return err
		}
		defer st.Close()
		t, release, err := DeploymentTree(sr, st, d)
		if err != nil {
			return err
		}
		defer release()
		// The tree is /proc/self/fd/N, our descriptor of the detached
		// mount; grub-mkimage, a child, reaches it through our PID.
		tree = strings.Replace(t, "/proc/self/", fmt.Sprintf("/proc/%d/", os.Getpid()), 1)
	}
	if err := bootloader.CopyModules(tree, bootDir); err != nil {
		return err
	}
	if err := bootloader.InstallBIOS(ctx, bootloader.BIOSOptions{
		Disk:            target,
		BIOSBootStart:   layout.BIOSBoot.Start,
		BIOSBootSectors: layout.BIOSBoot.Length,
		BootUUID:        bootUUID,
		Deployment:      tree,
	}); err != nil {
		return fmt.Errorf("installing GRUB: %w", err)
	}
	return nil
}

// addBootToFstab mounts /boot by UUID, as bootc's to-disk does: the
// initramfs mounts only the root (root=UUID=...). It goes in the
// deployment's /etc (the admin's copy), so upgrades carry it over.
func addBootToFstab(deployment, bootUUID string) error {
	p := filepath.Join(deployment, "etc", "fstab")
	old, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	line := fmt.Sprintf("UUID=%s /boot ext4 defaults 1 2\n", bootUUID)
	if len(old) > 0 && old[len(old)-1] != '\n' {
		old = append(old, '\n')
	}
	return sysroot.WriteFileAtomic(p, append(old, line...), 0o644)
}
