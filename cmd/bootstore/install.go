package main

import (
	"fmt"
	"io"
	"os"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/bootstore/bootstore/pkg/fsclone"
	"github.com/bootstore/bootstore/pkg/host"
	"github.com/bootstore/bootstore/pkg/store"
)

func newInstallCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "install", Short: "Install a new host from an OS image"}
	cmd.AddCommand(newInstallToFilesystemCommand(g))
	cmd.AddCommand(newInstallToDiskCommand(g))
	return cmd
}

type installOptions struct {
	registry         registryOptions
	output           outputOptions
	unified          bool
	stateroot        string
	kargs            []string
	boundImages      string
	replace          string
	source           string
	copyMode         string
	allowNonBootable bool
	composefs        bool
	verity           bool
}

func newInstallToFilesystemCommand(g *globalOptions) *cobra.Command {
	o := &installOptions{}
	cmd := &cobra.Command{
		Use:   "to-filesystem --source-imgref IMAGE ROOT",
		Short: "Lay ROOT out as a new host booting IMAGE",
		Long: `Lay ROOT out as a new host: the unified store at ROOT/ostree/bootc/storage, the OS
image and its bound images pulled, the first deployment written under
ROOT/ostree/deploy/STATEROOT and made the default boot entry.

With --experimental-unified-storage the OS image stays in the unified store and
the deployment shares its files (reflinks, or hardlinks where the filesystem
has no reflinks). Without it the host is "split", as bootc hosts are today:
the OS image is copied into the deployment and not kept.

With --composefs (unified storage only) the deployment is one EROFS image of
the tree's metadata whose files redirect into the store's layers, mounted with
overlayfs; --verity also enables fs-verity on the store's files and records
their digests, so that a changed store file is refused when read.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runInstall(cmd, g, o, args[0])
		},
	}
	o.addFlags(cmd)
	cmd.Flags().StringVar(&o.replace, "replace", "", "wipe: erase a non-empty ROOT first")
	cmd.MarkFlagRequired("source-imgref")
	return cmd
}

// addFlags adds the flags install to-filesystem and to-disk share.
func (o *installOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	addRegistryFlags(cmd, &o.registry)
	addOutputFlags(cmd, &o.output)
	f.BoolVar(&o.unified, "experimental-unified-storage", false, "keep the OS image in the unified store and deploy from its layers")
	f.StringVar(&o.stateroot, "stateroot", "default", "name of the stateroot (persistent /var and /etc)")
	f.StringArrayVar(&o.kargs, "karg", nil, "kernel argument (repeatable)")
	f.StringVar(&o.boundImages, "bound-images", "pull", "pull the image's logically bound images: pull|skip")
	f.StringVar(&o.source, "source-imgref", "", "the OS image (any containers/image transport; a bare name means docker://)")
	f.StringVar(&o.copyMode, "copy-mode", "auto", "how deployment files are taken from the store: auto|reflink|hardlink|copy")
	f.BoolVar(&o.allowNonBootable, "allow-non-bootable", false, "install an image without the bootable label")
	f.BoolVar(&o.composefs, "composefs", false, "deploy as a composefs image over the unified store's files (needs --experimental-unified-storage)")
	f.BoolVar(&o.verity, "verity", false, "with --composefs: enable fs-verity on the store's files and require it when mounting")
	cmd.MarkFlagRequired("source-imgref")
}

// hostOptions checks the shared flags and turns them into host.Install's
// options; done closes the progress sink.
func (o *installOptions) hostOptions(cmd *cobra.Command) (opts host.InstallOptions, done func() error, err error) {
	if o.boundImages != "pull" && o.boundImages != "skip" {
		return opts, nil, usageError{fmt.Errorf("--bound-images must be pull or skip, not %q", o.boundImages)}
	}
	if o.composefs && !o.unified {
		return opts, nil, usageError{fmt.Errorf("--composefs needs --experimental-unified-storage")}
	}
	if o.verity && !o.composefs {
		return opts, nil, usageError{fmt.Errorf("--verity needs --composefs")}
	}
	mode, err := fsclone.ParseMode(o.copyMode)
	if err != nil {
		return opts, nil, usageError{fmt.Errorf("--copy-mode: %w", err)}
	}
	ref, err := store.ParseReference(o.source)
	if err != nil {
		return opts, nil, usageError{err}
	}
	bars, sink, closeSink, err := o.output.reporters()
	if err != nil {
		return opts, nil, err
	}
	return host.InstallOptions{
		Source:          ref,
		Unified:         o.unified,
		Stateroot:       o.stateroot,
		Kargs:           o.kargs,
		SkipBoundImages: o.boundImages == "skip",
		CopyMode:        mode,
		Composefs:       o.composefs,
		Verity:          o.verity,
		Pull: store.PullOptions{
			System:          o.registry.systemContext(cmd),
			RequireBootable: !o.allowNonBootable,
			ReportWriter:    bars,
			Progress:        sink,
		},
		Warn: os.Stderr,
	}, closeSink, nil
}

func runInstall(cmd *cobra.Command, g *globalOptions, o *installOptions, root string) error {
	if o.replace != "" && o.replace != "wipe" {
		return usageError{fmt.Errorf("--replace must be wipe, not %q", o.replace)}
	}
	opts, done, err := o.hostOptions(cmd)
	if err != nil {
		return err
	}
	defer done()
	opts.Wipe = o.replace == "wipe"
	res, err := host.Install(cmd.Context(), root, opts)
	if err != nil {
		return err
	}
	d := res.Deployed
	out := cmd.OutOrStdout()
	o.output.say(out, "Installed %s (%s storage) as deployment %s in stateroot %s\n",
		res.Host.Ref, d.Deployment.Origin.Storage, d.Deployment.Name(), d.Deployment.Stateroot)
	o.sayDeployed(out, res)
	return nil
}

// sayDeployed reports how the deployment was built and the bound images
// installed with it.
func (o *installOptions) sayDeployed(out io.Writer, res *host.Installed) {
	d := res.Deployed
	if d.Deployment.Origin.Composefs != "" {
		o.output.say(out, "Deployed %d files, %s as composefs image %s in %.2fs\n", d.Build.Files, units.HumanSize(float64(d.Build.Bytes)), d.Deployment.Origin.Composefs, d.Duration.Seconds())
	} else {
		o.output.say(out, "Deployed %d files, %s in %.2fs: %s\n", d.Build.Files, units.HumanSize(float64(d.Build.Bytes)), d.Duration.Seconds(), d.Clones)
	}
	for _, b := range res.Bound {
		o.output.say(out, "Bound image: %s %s\n", b.Ref, b.ID)
	}
}
