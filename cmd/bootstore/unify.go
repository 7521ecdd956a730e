package main

import (
	"os"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/bootstore/bootstore/pkg/host"
	"github.com/bootstore/bootstore/pkg/store"
	"github.com/bootstore/bootstore/pkg/sysroot"
)

func newImageSetUnifiedCommand(g *globalOptions) *cobra.Command {
	var reg registryOptions
	var out outputOptions
	cmd := &cobra.Command{
		Use:   "set-unified",
		Short: "Onboard a split host: keep the booted image in the unified store, with one copy on disk",
		Long: `Pull the booted image by its recorded digest into the unified store, check that it is
the image the booted deployment was made from, and replace the deployment's copies
of read-only files with reflinks (or hardlinks) of the store's identical files.
Later upgrades take the unified path. Prints the bytes reclaimed (statfs).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			sr, err := sysroot.New(g.sysroot)
			if err != nil {
				return err
			}
			bars, sink, closeSink, err := out.reporters()
			if err != nil {
				return err
			}
			defer closeSink()
			res, err := host.SetUnified(cmd.Context(), sr, store.PullOptions{
				System: reg.systemContext(cmd), RequireBootable: false, ReportWriter: bars, Progress: sink,
			}, os.Stderr)
			if err != nil {
				return err
			}
			out.say(cmd.OutOrStdout(), "%s is in the unified store as %s\n", res.Image.Ref, res.Image.ID)
			out.say(cmd.OutOrStdout(), "%d files now share data with the store (%s), %d left as they were; %s reclaimed\n",
				res.Shared, res.Method, res.Skipped, units.HumanSize(float64(res.Reclaimed)))
			return nil
		},
	}
	addRegistryFlags(cmd, &reg)
	addOutputFlags(cmd, &out)
	return cmd
}
