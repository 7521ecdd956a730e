package bls

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"go.podman.io/storage/pkg/reexec"
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
	dog, err := startThawWatchdog(boot)
	if err != nil {
		return fmt.Errorf("checkpointing %s: %w", boot, err)
	}
	defer dog.stop()
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

// thawWatchdogName is the re-executed watchdog (reexec; every binary that
// writes boot entries calls reexec.Init first, as bootstore's main does).
const thawWatchdogName = "bootstore-thaw-watchdog"

func init() { reexec.Register(thawWatchdogName, thawWatchdogMain) }

// A process killed between the freeze and the thaw (SIGKILL, the OOM
// killer) would leave /boot frozen, and every later writer, the shutdown's
// unmount among them, stuck. As ostree does, a watchdog process waits on a
// pipe from this one: when the pipe closes without "done", this process is
// gone, and the watchdog thaws /boot. (A kill of the whole unit's cgroup
// takes the watchdog too; systemd's stop timeout is what ends those.)
type thawWatchdog struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// startThawWatchdog starts the watchdog for boot and returns once it is
// ready to thaw.
func startThawWatchdog(boot string) (*thawWatchdog, error) {
	cmd := reexec.Command(thawWatchdogName, boot)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the thaw watchdog: %w", err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		stdin.Close()
		cmd.Wait()
		return nil, fmt.Errorf("the thaw watchdog did not start (said %q): %v", line, err)
	}
	return &thawWatchdog{cmd: cmd, stdin: stdin}, nil
}

// stop tells the watchdog the thaw is done and waits for it to exit.
func (d *thawWatchdog) stop() {
	io.WriteString(d.stdin, "done\n")
	d.stdin.Close()
	d.cmd.Wait()
}

// thawWatchdogMain is the watchdog: argument 1 is the mount to thaw should
// its parent go away before writing "done".
func thawWatchdogMain() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: "+thawWatchdogName+" MOUNT")
		os.Exit(2)
	}
	boot := os.Args[1]
	// Opened before "ready": opening a directory of a frozen file system
	// works, but this way nothing is left to fail after the parent died.
	fd, err := unix.Open(boot, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", thawWatchdogName, err)
		os.Exit(1)
	}
	os.Stdout.WriteString("ready\n")
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	if line == "done\n" {
		os.Exit(0)
	}
	// EINVAL: not frozen (the parent died before its freeze, or after its thaw).
	if err := unix.IoctlSetInt(fd, fiThaw, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		fmt.Fprintf(os.Stderr, "%s: thawing %s after its writer died: %v (run fsfreeze --unfreeze %s)\n", thawWatchdogName, boot, err, boot)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "%s: thawed %s: the process that froze it died before its thaw\n", thawWatchdogName, boot)
	os.Exit(0)
}
