package progress

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"go.podman.io/image/v5/types"
	"golang.org/x/sys/unix"
)

// Version is the version of bootc's progress protocol that JSON writes, as
// its Start event announces it.
const Version = "0.1.0"

// DefaultMinInterval is the least time between two throttled ProgressBytes
// events of one image: 5 a second, as bootc writes them.
const DefaultMinInterval = 200 * time.Millisecond

// chanBuffer is how many events copy.Image may send ahead of the sink, so
// that a pull does not wait for every write.
const chanBuffer = 64

// startEvent is bootc's Start event.
type startEvent struct {
	Type    string `json:"type"`
	Version string `json:"version"`
}

// bytesEvent is bootc's ProgressBytes event.
type bytesEvent struct {
	Type        string         `json:"type"`
	Task        string         `json:"task"`
	Description string         `json:"description"`
	ID          string         `json:"id"`
	BytesCached uint64         `json:"bytesCached"`
	Bytes       uint64         `json:"bytes"`
	BytesTotal  uint64         `json:"bytesTotal"`
	StepsCached uint64         `json:"stepsCached"`
	Steps       uint64         `json:"steps"`
	StepsTotal  uint64         `json:"stepsTotal"`
	Subtasks    []subTaskBytes `json:"subtasks"`
}

// subTaskBytes is bootc's SubTaskBytes object: one layer of a pull.
type subTaskBytes struct {
	Subtask     string `json:"subtask"`
	Description string `json:"description"`
	ID          string `json:"id"`
	BytesCached uint64 `json:"bytesCached"`
	Bytes       uint64 `json:"bytes"`
	BytesTotal  uint64 `json:"bytesTotal"`
}

// stepsEvent is bootc's ProgressSteps event.
type stepsEvent struct {
	Type        string        `json:"type"`
	Task        string        `json:"task"`
	Description string        `json:"description"`
	ID          string        `json:"id"`
	StepsCached uint64        `json:"stepsCached"`
	Steps       uint64        `json:"steps"`
	StepsTotal  uint64        `json:"stepsTotal"`
	Subtasks    []SubTaskStep `json:"subtasks"`
}

// JSON is a Sink that writes bootc's progress format: JSON Lines, one event
// per line, each line written with one Write call. It is safe for concurrent
// use.
//
// A failed write stops the stream (the pulls go on) and is reported by Close.
// A writer that blocks holds up the pulls that report to it.
type JSON struct {
	minInterval time.Duration

	mu     sync.Mutex
	w      io.Writer
	closer io.Closer // what Close closes; nil if JSON does not own w
	err    error     // the first write error
	closed bool
}

var _ Sink = (*JSON)(nil)

// Option configures a JSON sink.
type Option func(*JSON)

// WithMinInterval sets the least time between two ProgressBytes events of one
// image that report mere byte counts (default DefaultMinInterval). A layer
// finishing and the end of a pull are always written at once. Zero writes
// every change.
func WithMinInterval(d time.Duration) Option {
	return func(j *JSON) { j.minInterval = d }
}

// NewJSON returns a JSON sink writing to w; it writes the Start event at
// once. Close does not close w.
func NewJSON(w io.Writer, opts ...Option) *JSON {
	j := &JSON{w: w, minInterval: DefaultMinInterval}
	for _, o := range opts {
		o(j)
	}
	j.write(startEvent{Type: "Start", Version: Version})
	return j
}

// FromFD returns a JSON sink writing to the open file descriptor fd (as given
// to --progress-fd), which it takes over: Close closes it, unless it is 0, 1
// or 2. It fails, naming fd, if fd is not open for writing or the Start event
// cannot be written to it.
func FromFD(fd int, opts ...Option) (*JSON, error) {
	if fd < 0 {
		return nil, fmt.Errorf("progress fd %d: not a file descriptor", fd)
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, fmt.Errorf("progress fd %d is not open: %w", fd, err)
	}
	if flags&unix.O_ACCMODE == unix.O_RDONLY {
		return nil, fmt.Errorf("progress fd %d is open read-only; it must be open for writing", fd)
	}
	var f *os.File
	switch fd {
	case 0:
		f = os.Stdin
	case 1:
		f = os.Stdout
	case 2:
		f = os.Stderr
	default:
		f = os.NewFile(uintptr(fd), fmt.Sprintf("progress-fd-%d", fd))
	}
	j := NewJSON(f, opts...)
	j.mu.Lock()
	err = j.err
	j.mu.Unlock()
	if err != nil {
		if fd > 2 {
			f.Close()
		}
		return nil, fmt.Errorf("progress fd %d: %w", fd, err)
	}
	if fd > 2 {
		j.closer = f
	}
	return j, nil
}

// Close stops the stream: events reported afterwards are dropped. It closes
// the file descriptor of FromFD, and returns the first error met writing, if
// any. Pulls begun before Close must still be finished; their final events
// are dropped. Close may be called more than once.
func (j *JSON) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.closed {
		j.closed = true
		if j.closer != nil {
			if err := j.closer.Close(); err != nil && j.err == nil {
				j.err = fmt.Errorf("closing progress output: %w", err)
			}
		}
	}
	return j.err
}

// Steps writes a ProgressSteps event.
func (j *JSON) Steps(task, description, id string, done, total uint64, subtasks []SubTaskStep) {
	if subtasks == nil {
		subtasks = []SubTaskStep{}
	}
	j.write(stepsEvent{
		Type:        "ProgressSteps",
		Task:        task,
		Description: description,
		ID:          id,
		Steps:       done,
		StepsTotal:  total,
		Subtasks:    subtasks,
	})
}

// BeginImage writes a first ProgressBytes event for ref and starts a
// goroutine that turns copy.Image's events into ProgressBytes events until
// finish is called. finish closes the channel, waits for the goroutine and
// writes the final event; on success that one reports every layer complete.
func (j *JSON) BeginImage(ref string, layers []types.BlobInfo) (chan types.ProgressProperties, func(err error)) {
	p := newPull(ref, layers)
	j.write(p.event())
	ch := make(chan types.ProgressProperties, chanBuffer)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		j.follow(p, ch)
	}()
	return ch, onlyOnce(func(err error) {
		close(ch)
		<-drained
		if err == nil {
			p.complete()
		}
		j.write(p.event())
	})
}

// follow applies the events of ch to p until ch is closed, writing an event
// when a layer finishes and otherwise at most every minInterval; a change
// held back is written when the interval has passed.
func (j *JSON) follow(p *pull, ch <-chan types.ProgressProperties) {
	last := time.Now() // BeginImage just wrote one
	pending := false
	var timer *time.Timer
	var tick <-chan time.Time
	flush := func() {
		j.write(p.event())
		last = time.Now()
		pending = false
		if timer != nil {
			timer.Stop()
		}
		tick = nil
	}
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				return
			}
			changed, milestone := p.apply(e)
			switch {
			case !changed:
			case milestone || time.Since(last) >= j.minInterval:
				flush()
			default:
				pending = true
				if tick == nil {
					wait := j.minInterval - time.Since(last)
					if timer == nil {
						timer = time.NewTimer(wait)
					} else {
						timer.Reset(wait)
					}
					tick = timer.C
				}
			}
		case <-tick:
			tick = nil
			if pending {
				flush()
			}
		}
	}
}

// write writes v as one line, unless the stream is closed or broken.
func (j *JSON) write(v any) {
	line, err := json.Marshal(v)
	if err != nil {
		// Only plain structs of strings and numbers are written.
		panic(fmt.Sprintf("progress: encoding %T: %v", v, err))
	}
	line = append(line, '\n')
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed || j.err != nil {
		return
	}
	if _, err := j.w.Write(line); err != nil {
		j.err = fmt.Errorf("writing progress: %w", err)
	}
}
