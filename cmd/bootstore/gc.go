package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/bootstore/bootstore/pkg/gc"
	"github.com/bootstore/bootstore/pkg/sysroot"
)

func newGCCommand(g *globalOptions) *cobra.Command {
	var dryRun bool
	var format string
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Remove images, layers, deployments and leftovers no consumer uses",
		Long: `Roots, by image ID: every kept deployment (staged, booted, rollback) with the bound
images it recorded, images of containers in the store, and pinned images. Everything
else in the unified store goes, with deployments and kernels no boot entry uses and
the leftovers of crashed runs. The bytes freed are measured with statfs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "human" && format != "json" {
				return usageError{fmt.Errorf("--format must be human or json, not %q", format)}
			}
			sr, err := sysroot.New(g.sysroot)
			if err != nil {
				return err
			}
			res, err := gc.Run(cmd.Context(), sr, dryRun, os.Stderr)
			if err != nil {
				return err
			}
			if format == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			printGC(cmd, res)
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "say what would be removed, remove nothing")
	cmd.Flags().StringVar(&format, "format", "human", "output format: human|json")
	return cmd
}

func printGC(cmd *cobra.Command, res *gc.Result) {
	out := cmd.OutOrStdout()
	verb := "Removed"
	if res.DryRun {
		verb = "Would remove"
	}
	for _, v := range res.Plan.Images {
		fmt.Fprintf(out, "%s image %s %s (%s)\n", verb, shortID(v.ID), strings.Join(v.Names, ","), units.HumanSize(float64(v.Size)))
	}
	for _, l := range res.Plan.Layers {
		fmt.Fprintf(out, "%s orphan layer %s\n", verb, shortID(l))
	}
	for _, p := range res.Plan.Paths {
		fmt.Fprintf(out, "%s %s\n", verb, p)
	}
	if res.DryRun {
		fmt.Fprintf(out, "Dry run: %d images, %d orphan layers, %d paths; %d images kept by a consumer\n",
			len(res.Plan.Images), len(res.Plan.Layers), len(res.Plan.Paths), len(res.Plan.Consumers))
		return
	}
	fmt.Fprintf(out, "Freed %s: %d images, %d layers, %d paths removed; %d images kept by a consumer\n",
		units.HumanSize(float64(res.Freed)), res.ImagesRemoved, res.LayersRemoved, res.PathsRemoved, len(res.Plan.Consumers))
}

func newImagePinCommand(g *globalOptions, unpin bool) *cobra.Command {
	use, short := "pin IMAGE", "Keep IMAGE (a name or ID) whatever else uses it"
	if unpin {
		use, short = "unpin IMAGE", "Drop the pin of IMAGE"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sess, err := openSession(cmd.Context(), g, true)
			if err != nil {
				return err
			}
			defer sess.Close()
			op, verb := gc.PinImage, "Pinned"
			if unpin {
				op, verb = gc.UnpinImage, "Unpinned"
			}
			p, err := op(sess.root, sess.store, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s (%s)\n", verb, p.Name, p.ID)
			return nil
		},
	}
}
