// Command bootstore manages an image-based host's OS image and its logically
// bound images in one containers/storage store. This package only declares
// commands, parses flags and prints; the work is in pkg/.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.podman.io/storage/pkg/reexec"

	"github.com/bootstore/bootstore/pkg/host"
	"github.com/bootstore/bootstore/pkg/store"
)

// Exit codes beyond 0 and 1, so scripts and timers can tell failures apart.
const (
	exitFailure      = 1
	exitUsage        = 2
	exitNotBootable  = 3
	exitNoSpace      = 4
	exitLockHeld     = 5
	exitBoundInvalid = 6
	exitNotEmpty     = 7
	exitSameContent  = 8
)

func main() {
	// containers/storage re-executes this binary to apply layers in a
	// chroot; those children must not run the CLI.
	if reexec.Init() {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCommand()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		if errors.Is(err, syscall.EROFS) {
			fmt.Fprintln(os.Stderr, "The file system above is mounted read-only, and this command writes to it (opening the store takes its lock): remount it read-write (mount -o remount,rw MOUNTPOINT) and run the command again. status answers on a read-only sysroot.")
		}
		os.Exit(exitCode(err))
	}
}

// globalOptions are the flags every command takes.
type globalOptions struct {
	sysroot string
}

func newRootCommand() *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:           "bootstore",
		Short:         "Keep a bootable host's OS image and its bound images in one container store",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.sysroot, "sysroot", "/", "root of the host to operate on")
	root.AddCommand(newImageCommand(g), newInstallCommand(g), newStatusCommand(g),
		newUpgradeCommand(g), newSwitchCommand(g), newRollbackCommand(g), newInternalsCommand(g), newGCCommand(g))
	return root
}

type usageError struct{ error }

func exitCode(err error) int {
	var ue usageError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, store.ErrNotBootable), errors.Is(err, host.ErrNoUsr):
		return exitNotBootable
	case errors.Is(err, store.ErrInsufficientSpace):
		return exitNoSpace
	case errors.Is(err, sysrootErrLocked):
		return exitLockHeld
	case errors.Is(err, boundErrInvalid):
		return exitBoundInvalid
	case errors.Is(err, host.ErrNotEmpty):
		return exitNotEmpty
	case errors.Is(err, host.ErrSameContent):
		return exitSameContent
	}
	return exitFailure
}
