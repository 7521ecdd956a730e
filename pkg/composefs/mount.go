package composefs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// MountOptions are how an image is mounted.
type MountOptions struct {
	// DataRoot is the data-only lower layer the image's redirects point
	// into (Options.DataRoot of Build).
	DataRoot string
	// RequireVerity makes overlayfs refuse a data file whose fs-verity
	// digest is not the one the image records (verity=require).
	RequireVerity bool
}

// Mount mounts image read-only at target: the image through a loop device
// as erofs on a private directory that is detached again once overlayfs
// holds it, so that only target remains. Unmount target (unix.Unmount) to
// release everything; the loop device clears itself.
func Mount(image, target string, opts MountOptions) error {
	if strings.ContainsAny(opts.DataRoot, ":,\\") || !filepath.IsAbs(opts.DataRoot) {
		return fmt.Errorf("composefs: data root %q must be an absolute path without ':', ',' or '\\'", opts.DataRoot)
	}
	loop, lf, err := attachLoop(image)
	if err != nil {
		return fmt.Errorf("composefs: %s: %w", image, err)
	}
	// Closing the last descriptor of an unmounted autoclear loop device
	// detaches it; once mounted, the mount holds it.
	defer lf.Close()
	meta, err := os.MkdirTemp("", "bootstore-cfs-")
	if err != nil {
		return fmt.Errorf("composefs: %w", err)
	}
	defer os.Remove(meta)
	if err := unix.Mount(loop, meta, "erofs", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return fmt.Errorf("composefs: mounting %s (%s) as erofs: %w", image, loop, err)
	}
	// overlayfs keeps the erofs mount alive once it holds it.
	defer unix.Unmount(meta, unix.MNT_DETACH)
	data := "ro,metacopy=on,redirect_dir=on,lowerdir=" + meta + "::" + opts.DataRoot
	if opts.RequireVerity {
		data += ",verity=require"
	}
	if err := unix.Mount("composefs", target, "overlay", unix.MS_RDONLY, data); err != nil {
		return fmt.Errorf("composefs: mounting %s at %s (overlay %s): %w", image, target, data, err)
	}
	return nil
}

// attachLoop binds a free loop device to file, read-only, cleared when its
// last user goes, and returns the device's path and an open descriptor.
func attachLoop(file string) (string, *os.File, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", nil, fmt.Errorf("loop devices: %w", err)
	}
	defer ctl.Close()
	for range 16 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", nil, fmt.Errorf("finding a free loop device: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		lf, err := os.OpenFile(dev, os.O_RDONLY, 0)
		if err != nil {
			return "", nil, err
		}
		cfg := unix.LoopConfig{Fd: uint32(f.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:], file)
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if errors.Is(err, unix.EBUSY) {
			lf.Close()
			continue // taken by someone else in between
		}
		if err != nil {
			lf.Close()
			return "", nil, fmt.Errorf("configuring %s: %w", dev, err)
		}
		return dev, lf, nil
	}
	return "", nil, errors.New("no free loop device")
}
