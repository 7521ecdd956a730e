package main

import (
	"fmt"
	"os"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/bootstore/bootstore/pkg/fsclone"
	"github.com/bootstore/bootstore/pkg/host"
	"github.com/bootstore/bootstore/pkg/store"
	"github.com/bootstore/bootstore/pkg/sysroot"
)

// stageFlags are shared by upgrade and switch.
type stageFlags struct {
	registry registryOptions
	output   outputOptions
	apply    bool
	copyMode string
}

func addStageFlags(cmd *cobra.Command, f *stageFlags) {
	addRegistryFlags(cmd, &f.registry)
	addOutputFlags(cmd, &f.output)
	cmd.Flags().BoolVar(&f.apply, "apply", false, "reboot into the staged deployment (under --sysroot: finalize it and mark it booted)")
	cmd.Flags().StringVar(&f.copyMode, "copy-mode", "auto", "how deployment files are taken from the store: auto|reflink|hardlink|copy")
}

func (f *stageFlags) options(cmd *cobra.Command) (host.StageOptions, func() error, error) {
	mode, err := fsclone.ParseMode(f.copyMode)
	if err != nil {
		return host.StageOptions{}, nil, usageError{fmt.Errorf("--copy-mode: %w", err)}
	}
	bars, sink, closeSink, err := f.output.reporters()
	if err != nil {
		return host.StageOptions{}, nil, err
	}
	return host.StageOptions{
		CopyMode: mode,
		Pull:     store.PullOptions{System: f.registry.systemContext(cmd), RequireBootable: true, ReportWriter: bars, Progress: sink},
		Warn:     os.Stderr,
	}, closeSink, nil
}

func newUpgradeCommand(g *globalOptions) *cobra.Command {
	f := &stageFlags{}
	var checkOnly, downloadOnly, fromDownloaded bool
	var imageSet string
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Fetch the booted image's newer version with its bound images and stage it",
		Long: `Resolve the booted deployment's origin; if the source serves a newer image, pull it
and ALL its bound images into the store first, and only then write and stage the new
deployment. A bound image that cannot be pulled stages nothing. The staged
deployment becomes the default at shutdown (bootstore-finalize-staged.service).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, closeSink, err := f.options(cmd)
			if err != nil {
				return err
			}
			defer closeSink()
			opts.Check, opts.DownloadOnly, opts.FromDownloaded = checkOnly, downloadOnly, fromDownloaded
			if imageSet != "" {
				if opts.ImageSet, err = store.ParseReference(imageSet); err != nil {
					return usageError{fmt.Errorf("--image-set: %w", err)}
				}
			}
			sr, err := sysroot.New(g.sysroot)
			if err != nil {
				return err
			}
			res, err := host.Upgrade(cmd.Context(), sr, opts)
			if err != nil {
				return err
			}
			return reportStage(cmd, sr, f, res)
		},
	}
	addStageFlags(cmd, f)
	cmd.Flags().BoolVar(&checkOnly, "check", false, "only check for an update (manifest and config; no layer)")
	cmd.Flags().BoolVar(&downloadOnly, "download-only", false, "stage a deployment that is not finalized at shutdown until --from-downloaded")
	cmd.Flags().BoolVar(&fromDownloaded, "from-downloaded", false, "release a deployment staged with --download-only")
	cmd.Flags().StringVar(&imageSet, "image-set", "", "read the new image and its bound images from this image set (oci:DIR or oci-archive:FILE from image save) instead of the registry")
	cmd.MarkFlagsMutuallyExclusive("check", "download-only", "from-downloaded")
	return cmd
}

func newSwitchCommand(g *globalOptions) *cobra.Command {
	f := &stageFlags{}
	var transport string
	var retain bool
	cmd := &cobra.Command{
		Use:   "switch IMAGE",
		Short: "Stage a deployment of another image",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			switch transport {
			case "registry", "":
			case "oci", "oci-archive", "containers-storage", "dir":
				name = transport + ":" + name
			default:
				return usageError{fmt.Errorf("--transport must be registry, oci, oci-archive, containers-storage or dir, not %q", transport)}
			}
			ref, err := store.ParseReference(name)
			if err != nil {
				return usageError{err}
			}
			opts, closeSink, err := f.options(cmd)
			if err != nil {
				return err
			}
			defer closeSink()
			sr, err := sysroot.New(g.sysroot)
			if err != nil {
				return err
			}
			res, err := host.Switch(cmd.Context(), sr, ref, opts)
			if err != nil {
				return err
			}
			return reportStage(cmd, sr, f, res)
		},
	}
	addStageFlags(cmd, f)
	cmd.Flags().StringVar(&transport, "transport", "registry", "transport of IMAGE: registry|oci|oci-archive|containers-storage|dir")
	cmd.Flags().BoolVar(&retain, "retain", false, "keep the previously booted image in the store (it is kept anyway while a deployment uses it)")
	return cmd
}

func reportStage(cmd *cobra.Command, sr *sysroot.Sysroot, f *stageFlags, res *host.StageResult) error {
	out := cmd.OutOrStdout()
	switch {
	case res.Released:
		f.output.say(out, "The download-only deployment will be finalized at the next shutdown.\n")
	case res.Update != nil:
		f.output.say(out, "Update available: %s %s", res.Update.Image, res.Update.ManifestDigest)
		if res.Update.Version != "" {
			f.output.say(out, " (version %s)", res.Update.Version)
		}
		f.output.say(out, "\n")
		return nil
	case res.UpToDate:
		// With --apply, what is already staged is still applied.
		f.output.say(out, "No update available.\n")
	case res.Staged != nil:
		d := res.Staged.Deployment
		f.output.event(out, map[string]string{
			"BOOTSTORE_IMAGE": res.Host.Ref, "BOOTSTORE_IMAGE_DIGEST": d.Origin.ManifestDigest,
			"BOOTSTORE_DEPLOYMENT": d.Name(), "BOOTSTORE_STORAGE": d.Origin.Storage,
		}, "Staged %s as %s (%s storage; bound images: %d)\n", res.Host.Ref, d.Name(), d.Origin.Storage, len(res.Bound))
		if res.GC != nil && res.GC.Freed > 0 {
			f.output.say(out, "Garbage collection freed %s\n", units.HumanSize(float64(res.GC.Freed)))
		}
	}
	if !f.apply {
		return nil
	}
	return apply(cmd, sr, f.output)
}

// apply reboots into the new default entry. A sysroot that is not the
// running system cannot reboot: there, the staged deployment is finalized
// and recorded as booted, which is what the reboot would have done.
func apply(cmd *cobra.Command, sr *sysroot.Sysroot, o outputOptions) error {
	state, err := sr.Load()
	if err != nil {
		return err
	}
	if state.Staged == nil || state.StagedDownloadOnly {
		o.say(cmd.OutOrStdout(), "Nothing staged to apply; not rebooting.\n")
		return nil
	}
	if sr.IsHostRoot() {
		return host.Logind{}.Reboot(cmd.Context())
	}
	if _, err := host.FinalizeStaged(cmd.Context(), sr); err != nil {
		return err
	}
	d, err := host.SimulateReboot(sr)
	if err != nil {
		return err
	}
	o.say(cmd.OutOrStdout(), "Applied: %s is booted\n", d.Name())
	return nil
}

func newRollbackCommand(g *globalOptions) *cobra.Command {
	var o outputOptions
	var applyNow bool
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Make the rollback deployment the default boot entry (drops a staged deployment)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			sr, err := sysroot.New(g.sysroot)
			if err != nil {
				return err
			}
			d, err := host.Rollback(sr)
			if err != nil {
				return err
			}
			o.say(cmd.OutOrStdout(), "Next boot: %s (%s)\n", d.Name(), d.Origin.Image)
			if applyNow {
				if sr.IsHostRoot() {
					return host.Logind{}.Reboot(cmd.Context())
				}
				_, err := host.SimulateReboot(sr)
				return err
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&o.quiet, "quiet", "q", false, "print nothing but errors")
	cmd.Flags().BoolVar(&applyNow, "apply", false, "reboot into it (under --sysroot: mark it booted)")
	return cmd
}

func newInternalsCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "internals", Short: "Commands run by units and tests, not by people", Hidden: true}
	finalize := &cobra.Command{
		Use:   "finalize-staged",
		Short: "Merge /etc into the staged deployment and make it the default boot entry (run at shutdown)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			sr, err := sysroot.New(g.sysroot)
			if err != nil {
				return err
			}
			res, err := host.FinalizeStaged(cmd.Context(), sr)
			if err != nil {
				return err
			}
			if res.Skipped != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "Nothing to finalize: %s\n", res.Skipped)
				return nil
			}
			if res.Resumed {
				fmt.Fprintf(cmd.OutOrStdout(), "Finalized %s: an interrupted finalization had already made it the default; removed its staged record\n", res.Deployment.Name())
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Finalized %s; /etc: %d kept from the admin, %d new defaults taken, %d added, %d deleted\n",
				res.Deployment.Name(), res.Etc.AdminKept, res.Etc.DefaultsTaken, res.Etc.Added, res.Etc.Deleted)
			return nil
		},
	}
	reboot := &cobra.Command{
		Use:   "simulate-reboot",
		Short: "Record the default boot entry as booted (only with --sysroot)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			sr, err := sysroot.New(g.sysroot)
			if err != nil {
				return err
			}
			d, err := host.SimulateReboot(sr)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Booted %s\n", d.Name())
			return nil
		},
	}
	cmd.AddCommand(finalize, reboot)
	return cmd
}
