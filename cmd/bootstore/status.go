package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bootstore/bootstore/pkg/status"
	"github.com/bootstore/bootstore/pkg/sysroot"
)

func newStatusCommand(g *globalOptions) *cobra.Command {
	var format string
	var booted bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the host's deployments as bootc does (BootcHost)",
		Long: `Show the staged, booted and rollback deployments. The booted deployment comes from
the kernel command line (ostree=) on a running host, and is the default boot
entry when --sysroot names another root. status never takes the lock.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			write := map[string]func(*cobra.Command, *status.Host) error{
				"human": func(c *cobra.Command, h *status.Host) error { return status.WriteHuman(c.OutOrStdout(), h) },
				"json":  func(c *cobra.Command, h *status.Host) error { return status.WriteJSON(c.OutOrStdout(), h) },
				"yaml":  func(c *cobra.Command, h *status.Host) error { return status.WriteYAML(c.OutOrStdout(), h) },
			}[format]
			if write == nil {
				return usageError{fmt.Errorf("--format must be human, json or yaml, not %q", format)}
			}
			sr, err := sysroot.New(g.sysroot)
			if err != nil {
				return err
			}
			// status shows what it can read; damaged records are left out
			// of the document and reported, and make the exit status 1.
			st, damage, err := sr.LoadReadable()
			if err != nil {
				return err
			}
			h := status.Build(st)
			if booted {
				h = status.FilterBooted(h)
			}
			if err := write(cmd, h); err != nil {
				return err
			}
			for _, w := range st.Warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			if len(damage) > 0 {
				return fmt.Errorf("the host's state is damaged; status above leaves out what could not be read: %w", errors.Join(damage...))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "human", "output format: human|json|yaml")
	cmd.Flags().BoolVar(&booted, "booted", false, "only the booted deployment")
	return cmd
}
