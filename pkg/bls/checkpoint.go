package bls

import (
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// FIFREEZE and FITHAW from linux/fs.h (_IOWR('X', 119/120, int)), which
// golang.org/x/sys/unix does not export; this encoding holds on x86 and
// arm64.
const (
	fiFreeze = 0xC0045877
	fiThaw   = 0xC0045878
)

// checkpointBoot makes what Write synced on a separate /boot readable to
// the bootloader. fsync puts metadata into the file system's journal, but
// GRUB reads ext4 and xfs without replaying their journals: after a power
// cut right after a swap it saw boot/loader and grub.cfg as they were
// before it (the boot suite's cut after finalization booted a deployment
// that had been removed since). Freezing the file system writes the
// journal back in place; ostree does the same after its swap. Only a
// /boot that is a mount of its own is frozen: freezing the file system
// the system runs from, with /boot a plain directory on it, could stall
// every writer if this process died before the thaw.
func checkpointBoot(boot string) error {
	var st, parent unix.Stat_t
	if err := unix.Stat(boot, &st); err != nil {
		return fmt.Errorf("checkpointing %s: %w", boot, err)
	}
	if err := unix.Stat(filepath.Dir(boot), &parent); err != nil {
		return fmt.Errorf("checkpointing %s: %w", boot, err)
	}
	if st.Dev == parent.Dev {
		return nil
	}
	fd, err := unix.Open(boot, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("checkpointing %s: %w", boot, err)
	}
	defer unix.Close(fd)
	if err := unix.IoctlSetInt(fd, fiFreeze, 0); err != nil {
		// No freeze here (vfat, no CAP_SYS_ADMIN) or someone else's
		// freeze in progress: the fsyncs are all there is.
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EINVAL) {
			return nil
		}
		return fmt.Errorf("freezing %s to write its journal back: %w", boot, err)
	}
	if err := unix.IoctlSetInt(fd, fiThaw, 0); err != nil {
		return fmt.Errorf("thawing %s (run fsfreeze --unfreeze %s): %w", boot, boot, err)
	}
	return nil
}
