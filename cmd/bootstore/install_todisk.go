package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bootstore/bootstore/pkg/host"
)

type installToDiskOptions struct {
	installOptions
	wipe        bool
	viaLoopback bool
	filesystem  string
}

func newInstallToDiskCommand(g *globalOptions) *cobra.Command {
	o := &installToDiskOptions{}
	cmd := &cobra.Command{
		Use:   "to-disk --source-imgref IMAGE DEVICE|FILE",
		Short: "Partition DEVICE and install a host booting IMAGE on it, bootloader included",
		Long: `Partition DEVICE (or, with --via-loopback, an image FILE) as bootc does: a GPT
with a BIOS boot partition, an EFI system partition, /boot (ext4) and the root
(--filesystem, xfs by default); install the host into the root as install
to-filesystem does, with root=UUID=... among the kernel arguments and /boot in
the deployment's /etc/fstab; and install GRUB for BIOS from the image's own
usr/lib/grub/i386-pc, whose menu bootstore regenerates from its boot entries on
every change of the boot order.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runInstallToDisk(cmd, o, args[0])
		},
	}
	o.addFlags(cmd)
	f := cmd.Flags()
	f.BoolVar(&o.wipe, "wipe", false, "erase a DEVICE that has a partition table")
	f.BoolVar(&o.viaLoopback, "via-loopback", false, "the target is an image file")
	f.StringVar(&o.filesystem, "filesystem", "xfs", "file system of the root partition: xfs|ext4|btrfs")
	return cmd
}

func runInstallToDisk(cmd *cobra.Command, o *installToDiskOptions, target string) error {
	switch o.filesystem {
	case "xfs", "ext4", "btrfs":
	default:
		return usageError{fmt.Errorf("--filesystem must be xfs, ext4 or btrfs, not %q", o.filesystem)}
	}
	opts, done, err := o.hostOptions(cmd)
	if err != nil {
		return err
	}
	defer done()
	opts.Wipe = o.wipe
	res, err := host.InstallToDisk(cmd.Context(), target, host.ToDiskOptions{
		InstallOptions: opts,
		Filesystem:     o.filesystem,
		ViaLoopback:    o.viaLoopback,
	})
	if errors.Is(err, host.ErrNeedsLoopback) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	d := res.Deployed
	out := cmd.OutOrStdout()
	o.output.say(out, "Installed %s (%s storage) on %s as deployment %s in stateroot %s\n",
		res.Host.Ref, d.Deployment.Origin.Storage, target, d.Deployment.Name(), d.Deployment.Stateroot)
	o.output.say(out, "Root file system %s (%s), /boot %s, GRUB for BIOS installed\n", res.RootUUID, o.filesystem, res.BootUUID)
	o.sayDeployed(out, res.Installed)
	return nil
}
