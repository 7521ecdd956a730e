package main

import (
	"errors"
	"fmt"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"
	"go.podman.io/image/v5/pkg/compression"

	"github.com/bootstore/bootstore/pkg/imageset"
	"github.com/bootstore/bootstore/pkg/store"
)

type saveOptions struct {
	registry         registryOptions
	output           outputOptions
	dest             string
	compression      string
	allowNonBootable bool
}

func newImageSaveCommand() *cobra.Command {
	o := &saveOptions{}
	cmd := &cobra.Command{
		Use:   "save IMAGE --output oci:DIR|oci-archive:FILE",
		Short: "Write an OS image and all its bound images into one OCI layout or archive",
		Long: `Copy IMAGE and every image its /usr/lib/bootc/bound-images.d names into one new
OCI layout (oci:DIR) or OCI archive (oci-archive:FILE). Blobs shared by several
images are stored once. The index names each image by its registry reference and
annotates its role (org.bootstore.image.role=host|bound), so that image load,
install to-filesystem --source-imgref, switch and upgrade --image-set read
everything from it with no registry, and record the registry references.
Needs no sysroot; the output must not exist.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImageSave(cmd, o, args[0])
		},
	}
	addRegistryFlags(cmd, &o.registry)
	addOutputFlags(cmd, &o.output)
	cmd.Flags().StringVarP(&o.dest, "output", "o", "", "where to write the set: oci:DIR or oci-archive:FILE")
	cmd.Flags().StringVar(&o.compression, "compression-format", "", "recompress every layer: gzip|zstd|zstd:chunked (default: keep the registry's blobs and digests)")
	cmd.Flags().BoolVar(&o.allowNonBootable, "allow-non-bootable", false, "save an image without the bootable label")
	cmd.MarkFlagRequired("output")
	return cmd
}

func runImageSave(cmd *cobra.Command, o *saveOptions, name string) error {
	src, err := store.ParseReference(name)
	if err != nil {
		return usageError{err}
	}
	dest, err := store.ParseReference(o.dest)
	if err != nil || !imageset.IsCandidate(dest) {
		return usageError{fmt.Errorf("--output must be oci:DIR or oci-archive:FILE, not %q", o.dest)}
	}
	opts := imageset.SaveOptions{Source: src, Output: dest, System: o.registry.systemContext(cmd), RequireBootable: !o.allowNonBootable}
	if o.compression != "" {
		algo, err := compression.AlgorithmByName(o.compression)
		if err != nil {
			return usageError{fmt.Errorf("--compression-format: %w", err)}
		}
		opts.Compression = &algo
	}
	bars, _, closeSink, err := o.output.reporters()
	if err != nil {
		return err
	}
	defer closeSink()
	opts.ReportWriter = bars
	saved, err := imageset.Save(cmd.Context(), opts)
	if errors.Is(err, imageset.ErrOutputExists) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	for _, e := range saved.Entries {
		o.output.say(out, "%s %s %s\n", e.Role, e.Ref, e.Digest)
	}
	o.output.say(out, "Wrote %s: %d images, %d blobs, %s\n", o.dest, len(saved.Entries), saved.Blobs, units.HumanSize(float64(saved.Bytes)))
	return nil
}

type loadOptions struct {
	registry         registryOptions
	output           outputOptions
	allowNonBootable bool
}

func newImageLoadCommand(g *globalOptions) *cobra.Command {
	o := &loadOptions{}
	cmd := &cobra.Command{
		Use:   "load oci:DIR|oci-archive:FILE",
		Short: "Put the OS image and bound images of an image set into the unified store, with no network",
		Long: `Read an image set written by image save and put its OS image and every bound
image into the unified store, named by their registry references, as image pull
would from the registry. Nothing is fetched from a registry; a damaged set
(truncated, a blob or manifest not matching its digest, a bound image missing)
is refused and leaves nothing in the store.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImageLoad(cmd, g, o, args[0])
		},
	}
	addRegistryFlags(cmd, &o.registry)
	addOutputFlags(cmd, &o.output)
	cmd.Flags().BoolVar(&o.allowNonBootable, "allow-non-bootable", false, "load a set whose OS image lacks the bootable label")
	return cmd
}

func runImageLoad(cmd *cobra.Command, g *globalOptions, o *loadOptions, name string) error {
	ref, err := store.ParseReference(name)
	if err != nil || !imageset.IsCandidate(ref) {
		return usageError{fmt.Errorf("image load takes oci:DIR or oci-archive:FILE, not %q", name)}
	}
	bars, sink, closeSink, err := o.output.reporters()
	if err != nil {
		return err
	}
	defer closeSink()
	sess, err := openSession(cmd.Context(), g, true)
	if err != nil {
		return err
	}
	defer sess.Close()
	set, err := imageset.Open(cmd.Context(), ref, sess.root.TempDir())
	if err != nil {
		return err
	}
	defer set.Close()
	hostName, err := set.HostName()
	if err != nil {
		return err
	}
	res, err := sess.store.PullHost(cmd.Context(), set.Host.Image, store.HostPullOptions{
		PullOptions: store.PullOptions{
			System:          o.registry.systemContext(cmd),
			RequireBootable: !o.allowNonBootable,
			ReportWriter:    bars,
			Progress:        sink,
			Name:            hostName,
		},
		BoundSource: set.BoundSource,
	})
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	o.output.say(out, "%s %s %s\n", res.Host.ID, res.Host.Ref, loadedWord(res.Host.Fetched))
	for _, b := range res.Bound {
		o.output.say(out, "%s %s %s (bound)\n", b.ID, b.Ref, loadedWord(b.Fetched))
	}
	return nil
}

func loadedWord(fetched bool) string {
	if fetched {
		return "loaded"
	}
	return "already present"
}
