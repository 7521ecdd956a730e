package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bootstore/bootstore/pkg/store"
	"github.com/bootstore/bootstore/pkg/sysroot"
)

type pushOptions struct {
	registry    registryOptions
	compression string
	quiet       bool
}

func newImagePushCommand(g *globalOptions) *cobra.Command {
	o := &pushOptions{}
	cmd := &cobra.Command{
		Use:   "push SRC DEST",
		Short: "Publish an image to a registry, recompressing its layers (e.g. as zstd:chunked for partial pulls)",
		Long: `Push SRC to the registry reference DEST with every layer in the format that
--compression-format names. SRC is an image in the unified store (name, ID or ID
prefix) or any containers/image reference (docker://, oci:, oci-archive:, dir:,
containers-storage:). Hosts pull zstd:chunked layers partially: an upgrade
fetches only the files their store lacks. estargz layers are built with the
estargz package; they add /stargz.index.json and /.no.prefetch.landmark to every
layer, change the image's DiffIDs and ID, and are pulled whole by bootstore
(containers/storage cannot check a partial eStargz layer against its DiffID).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImagePush(cmd, g, o, args[0], args[1])
		},
	}
	addRegistryFlags(cmd, &o.registry)
	cmd.Flags().StringVar(&o.compression, "compression-format", store.CompressionZstdChunked,
		"layer format: "+strings.Join(store.Compressions, "|"))
	cmd.Flags().BoolVarP(&o.quiet, "quiet", "q", false, "print nothing but errors")
	return cmd
}

func runImagePush(cmd *cobra.Command, g *globalOptions, o *pushOptions, srcName, destName string) error {
	valid := false
	for _, c := range store.Compressions {
		valid = valid || c == o.compression
	}
	if !valid {
		return usageError{fmt.Errorf("--compression-format must be one of %s, not %q", strings.Join(store.Compressions, ", "), o.compression)}
	}
	dest, err := store.ParseReference(destName)
	if err != nil {
		return usageError{err}
	}
	if !store.IsRegistry(dest) {
		return usageError{fmt.Errorf("%w %q: DEST must be a registry reference", store.ErrBadReference, destName)}
	}
	// SRC may name an image of the unified store; reading it needs no lock.
	var st *store.Store
	root, err := sysroot.New(g.sysroot)
	if err != nil {
		return err
	}
	if store.Exists(root.StorageRoot()) {
		sess, err := openSession(cmd.Context(), g, false)
		if err != nil {
			return err
		}
		defer sess.Close()
		st = sess.store
	}
	src, err := store.PushSource(st, srcName)
	if err != nil {
		return usageError{err}
	}
	opts := store.PushOptions{System: o.registry.systemContext(cmd), Compression: o.compression}
	if !o.quiet && term.IsTerminal(int(os.Stderr.Fd())) {
		opts.ReportWriter = os.Stderr
	}
	d, err := store.PushImage(cmd.Context(), src, dest, opts)
	if errors.Is(err, store.ErrBadReference) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	if !o.quiet {
		fmt.Fprintf(cmd.OutOrStdout(), "%s %s %s\n", d, destName, o.compression)
	}
	return nil
}
