// Package progress reports the progress of image pulls and of discrete stages
// to a Sink, most usefully as bootc's JSON Lines progress format (the
// `--progress-fd N` option of bootc and bootstore).
//
// The lifecycle of a JSON sink, as a consumer of the stream sees it:
//
//  1. Start: NewJSON or FromFD writes {"type":"Start","version":"0.1.0"}.
//  2. Per image: BeginImage(ref, layers) returns a channel for
//     copy.Options.Progress and a finish func. The caller runs copy.Image with
//     that channel (and ProgressInterval > 0, e.g. CopyInterval), then calls
//     finish(err) once copy.Image has returned. In between, ProgressBytes events
//     (task "pulling", id ref) are written, throttled; finish writes a final
//     one, which on success has bytes == bytesTotal and steps == stepsTotal.
//     Several images may be pulled at once.
//  3. Steps reports discrete stages (ProgressSteps events), such as the
//     pulling of a host's bound images.
//  4. Close stops the stream and reports the first write error, if any.
//
// The numbers of a ProgressBytes event follow bootc: bytesTotal and stepsTotal
// count what has to be fetched, bytesCached and stepsCached what the store
// already had. A layer is known to be cached only when copy.Image reports it
// (a Skipped event, or a partial pull that fetched less than the whole blob),
// so bytesTotal and stepsTotal may shrink while cached layers are discovered;
// bytes and steps never decrease, and bytes never exceeds bytesTotal.
package progress

import (
	"sync"
	"time"

	"go.podman.io/image/v5/types"
)

// CopyInterval is a sensible copy.Options.ProgressInterval to pair with a
// Sink: copy.Image sends no events at all when ProgressInterval is zero.
const CopyInterval = 100 * time.Millisecond

// Sink receives progress. Implementations are safe for concurrent use: the
// bound images of a host are pulled in parallel.
type Sink interface {
	// BeginImage announces a pull of ref whose layers are given as in the
	// manifest (digest and size, base layer first; a size may be -1 for
	// unknown; the list may be nil when the layers are not known in advance).
	// It returns the channel to pass as copy.Options.Progress (nil if the sink
	// wants no byte events) and a func to call exactly once after copy.Image
	// has returned, with its error (nil on success). The channel must not be
	// given to anything else, and finish must not be called before copy.Image
	// has returned: finish closes the channel.
	BeginImage(ref string, layers []types.BlobInfo) (chan types.ProgressProperties, func(err error))
	// Steps reports a discrete stage: task is machine readable (e.g.
	// "bound-images"), description human readable, id identifies this
	// instance of the task (e.g. the host image), done of total steps are
	// complete, and subtasks (may be nil) lists the steps.
	Steps(task, description, id string, done, total uint64, subtasks []SubTaskStep)
}

// SubTaskStep is one step of a Steps report; it is written as bootc's
// SubTaskStep object.
type SubTaskStep struct {
	// Subtask is a machine readable kind (e.g. "bound-image").
	Subtask string `json:"subtask"`
	// Description is human readable (e.g. "Bound image: quay.io/x/y:1").
	Description string `json:"description"`
	// ID identifies the step (e.g. the image reference).
	ID string `json:"id"`
	// Completed is false while the step runs, true when it is done.
	Completed bool `json:"completed"`
}

// Discard returns a Sink that reports nothing and asks copy.Image for no
// events.
func Discard() Sink { return discard{} }

type discard struct{}

func (discard) BeginImage(string, []types.BlobInfo) (chan types.ProgressProperties, func(error)) {
	return nil, func(error) {}
}

func (discard) Steps(string, string, string, uint64, uint64, []SubTaskStep) {}

// Multi returns a Sink that reports to every one of sinks; nil sinks and
// Discard sinks are left out.
func Multi(sinks ...Sink) Sink {
	var m multi
	for _, s := range sinks {
		switch s := s.(type) {
		case nil, discard:
		case multi:
			m = append(m, s...)
		default:
			m = append(m, s)
		}
	}
	switch len(m) {
	case 0:
		return Discard()
	case 1:
		return m[0]
	}
	return m
}

type multi []Sink

// BeginImage begins the image on every sink. When more than one sink wants
// byte events, one goroutine copies each event to all of their channels.
func (m multi) BeginImage(ref string, layers []types.BlobInfo) (chan types.ProgressProperties, func(error)) {
	var chans []chan types.ProgressProperties
	finishes := make([]func(error), 0, len(m))
	for _, s := range m {
		ch, finish := s.BeginImage(ref, layers)
		if ch != nil {
			chans = append(chans, ch)
		}
		if finish != nil {
			finishes = append(finishes, finish)
		}
	}
	finishAll := func(err error) {
		for _, f := range finishes {
			f(err)
		}
	}
	switch len(chans) {
	case 0:
		return nil, onlyOnce(finishAll)
	case 1:
		return chans[0], onlyOnce(finishAll)
	}
	in := make(chan types.ProgressProperties, chanBuffer)
	forwarded := make(chan struct{})
	go func() {
		defer close(forwarded)
		for p := range in {
			for _, ch := range chans {
				ch <- p
			}
		}
	}()
	return in, onlyOnce(func(err error) {
		close(in)
		<-forwarded
		finishAll(err)
	})
}

// Steps reports the stage to every sink.
func (m multi) Steps(task, description, id string, done, total uint64, subtasks []SubTaskStep) {
	for _, s := range m {
		s.Steps(task, description, id, done, total, subtasks)
	}
}

// onlyOnce makes a finish func safe to call more than once: calls after the
// first do nothing.
func onlyOnce(f func(error)) func(error) {
	var once sync.Once
	return func(err error) {
		once.Do(func() { f(err) })
	}
}
