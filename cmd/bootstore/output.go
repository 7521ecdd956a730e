package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bootstore/bootstore/pkg/progress"
)

// outputOptions are the progress flags of long-running commands.
type outputOptions struct {
	quiet      bool
	progressFD int
}

func addOutputFlags(cmd *cobra.Command, o *outputOptions) {
	cmd.Flags().BoolVarP(&o.quiet, "quiet", "q", false, "print nothing but errors")
	cmd.Flags().IntVar(&o.progressFD, "progress-fd", -1, "write progress as JSON Lines (bootc's progress format) to this file descriptor")
}

// reporters returns where progress bars go (a terminal only) and the
// machine-readable sink; close flushes the latter.
func (o *outputOptions) reporters() (bars io.Writer, sink progress.Sink, closeFn func() error, err error) {
	sink = progress.Discard()
	closeFn = func() error { return nil }
	if !o.quiet && term.IsTerminal(int(os.Stderr.Fd())) {
		bars = os.Stderr
	}
	if o.progressFD >= 0 {
		j, err := progress.FromFD(o.progressFD)
		if err != nil {
			return nil, nil, nil, usageError{fmt.Errorf("--progress-fd: %w", err)}
		}
		sink, closeFn = j, j.Close
	}
	return bars, sink, closeFn, nil
}

// say prints a line unless --quiet.
func (o *outputOptions) say(w io.Writer, format string, args ...any) {
	if !o.quiet {
		fmt.Fprintf(w, format, args...)
	}
}
