package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"go.podman.io/image/v5/docker/reference"

	"github.com/bootstore/bootstore/pkg/embed"
	"github.com/bootstore/bootstore/pkg/store"
)

type embedOptions struct {
	registry    registryOptions
	output      string
	storePath   string
	appsDir     string
	compression string
	tmpDir      string
	quiet       bool
}

func newImageEmbedCommand() *cobra.Command {
	o := &embedOptions{}
	cmd := &cobra.Command{
		Use:   "embed BASE [APP...] --output DEST",
		Short: "Build an OS image with app images physically bound inside it, layer by layer",
		Long: `Write to DEST an OS image made of BASE's layers, then one layer per distinct
layer of the apps (the layer's files under STORE/overlay/<layer ID>/diff, byte
for byte), then one layer with the store's metadata. podman reads STORE (default
` + embed.DefaultStorePath + `) as an additional image store and runs the apps
without pulling them. The apps are the APP arguments (any transport; NAME=REF
names one that has no registry name) plus the images of the quadlets that BASE's
--apps-dir links to. Building twice gives the same image; an app layer's blob
depends only on that app layer, so a new base does not make hosts fetch the apps
again.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImageEmbed(cmd, o, args[0], args[1:])
		},
	}
	addRegistryFlags(cmd, &o.registry)
	f := cmd.Flags()
	f.StringVar(&o.output, "output", "", "where to write the OS image (any transport: oci:DIR:TAG, docker://..., containers-storage:...)")
	f.StringVar(&o.storePath, "store-path", embed.DefaultStorePath, "absolute path of the embedded store in the OS image")
	f.StringVar(&o.appsDir, "apps-dir", embed.DefaultAppsDir, "directory in BASE of symlinks to the quadlets of more apps to embed")
	f.StringVar(&o.compression, "compression-format", embed.CompressionGzip, "compression of the added layers: gzip|zstd")
	f.StringVar(&o.tmpDir, "tmpdir", "", "directory to build the image in (needs room for the whole image; default: $TMPDIR)")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print nothing but errors")
	return cmd
}

func runImageEmbed(cmd *cobra.Command, o *embedOptions, baseName string, appArgs []string) error {
	if o.output == "" {
		return usageError{errors.New("--output DEST is required")}
	}
	if o.compression != embed.CompressionGzip && o.compression != embed.CompressionZstd {
		return usageError{fmt.Errorf("--compression-format must be gzip or zstd, not %q", o.compression)}
	}
	base, err := store.ParseReference(baseName)
	if err != nil {
		return usageError{err}
	}
	dest, err := store.ParseReference(o.output)
	if err != nil {
		return usageError{err}
	}
	opts := embed.Options{Base: base, Dest: dest, StorePath: o.storePath, AppsDir: o.appsDir, Compression: o.compression,
		System: o.registry.systemContext(cmd), TempDir: o.tmpDir}
	for _, a := range appArgs {
		app, err := parseApp(a)
		if err != nil {
			return usageError{err}
		}
		opts.Apps = append(opts.Apps, app)
	}
	if !o.quiet {
		opts.Log = os.Stderr
	}
	res, err := embed.Embed(cmd.Context(), opts)
	if errors.Is(err, embed.ErrAppClash) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	if !o.quiet {
		for _, a := range res.Apps {
			fmt.Fprintf(cmd.OutOrStdout(), "embedded %s %s (%d layers)\n", a.Name, a.Digest, len(a.Layers))
		}
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", res.Digest, o.output)
	return nil
}

// parseApp parses APP: a reference in any transport, or NAME=REF.
func parseApp(arg string) (embed.App, error) {
	if name, ref, ok := strings.Cut(arg, "="); ok && !strings.Contains(name, "://") {
		named, err := reference.ParseNormalizedNamed(name)
		if err != nil {
			return embed.App{}, fmt.Errorf("%w %q: %v", store.ErrBadReference, name, err)
		}
		r, err := store.ParseReference(ref)
		if err != nil {
			return embed.App{}, err
		}
		return embed.App{Ref: r, Name: reference.TagNameOnly(named).String()}, nil
	}
	r, err := store.ParseReference(arg)
	if err != nil {
		return embed.App{}, err
	}
	return embed.App{Ref: r}, nil
}
