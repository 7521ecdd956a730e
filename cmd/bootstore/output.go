package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
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
	if n := progress.NewNotify(); n != nil {
		sink = progress.Multi(sink, n)
	}
	return bars, sink, closeFn, nil
}

// event prints a line unless --quiet and, when stdout is the journal (a
// systemd unit), sends it as a journal entry with structured fields
// (BOOTSTORE_IMAGE=..., BOOTSTORE_DEPLOYMENT=...) instead, so
// `journalctl BOOTSTORE_DEPLOYMENT=...` finds it.
func (o *outputOptions) event(w io.Writer, fields map[string]string, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if isJournal, _ := journal.StdoutIsJournalStream(); isJournal && journal.Enabled() {
		if journal.Send(strings.TrimSpace(msg), journal.PriInfo, fields) == nil {
			return
		}
	}
	o.say(w, "%s", msg)
}

// say prints a line unless --quiet.
func (o *outputOptions) say(w io.Writer, format string, args ...any) {
	if !o.quiet {
		fmt.Fprintf(w, format, args...)
	}
}
