package progress_test

import (
	"bytes"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	"go.podman.io/image/v5/types"
	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/pkg/progress"
	"github.com/bootstore/bootstore/pkg/progress/progresstest"
)

func TestDiscard(t *testing.T) {
	d := progress.Discard()
	ch, finish := d.BeginImage("r", []types.BlobInfo{blob("a", 1)})
	if ch != nil {
		t.Error("Discard asks for events")
	}
	finish(nil)
	d.Steps("t", "d", "i", 0, 0, nil)
}

func TestMultiCollapses(t *testing.T) {
	j := progress.NewJSON(io.Discard)
	if got := progress.Multi(nil, progress.Discard(), j); got != progress.Sink(j) {
		t.Errorf("Multi of one sink is %T, want the sink", got)
	}
	ch, finish := progress.Multi().BeginImage("r", nil)
	if ch != nil {
		t.Error("Multi() asks for events")
	}
	finish(nil)
}

// TestMulti: every sink sees every event of a pull and every stage.
func TestMulti(t *testing.T) {
	var out1, out2, out3 syncBuffer
	j1 := progress.NewJSON(&out1, progress.WithMinInterval(0))
	j2 := progress.NewJSON(&out2, progress.WithMinInterval(0))
	j3 := progress.NewJSON(&out3, progress.WithMinInterval(0))
	m := progress.Multi(j1, progress.Discard(), progress.Multi(j2, j3))
	a, b := blob("a", 100), blob("b", 50)
	pullWith(m, "r", []types.BlobInfo{a, b}, nil,
		ev(newArtifact, a, 0), ev(read, a, 60), ev(skipped, b, 0), ev(done, a, 100))
	m.Steps("t", "d", "i", 1, 1, nil)
	for _, j := range []*progress.JSON{j1, j2, j3} {
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(out1.Bytes(), out2.Bytes()) || !bytes.Equal(out1.Bytes(), out3.Bytes()) {
		t.Errorf("sinks differ:\n%s\n%s\n%s", out1.Bytes(), out2.Bytes(), out3.Bytes())
	}
	events := validate(t, out1.Bytes())
	progresstest.CheckPulls(t, events)
	wantUints(t, lastFor(t, events, "ProgressBytes", "r"), map[string]uint64{"bytes": 100, "bytesCached": 50, "steps": 1, "stepsCached": 1})
	lastFor(t, events, "ProgressSteps", "i")
	// Start, first, one per pull event (none is throttled), final, steps.
	if len(events) != 8 {
		t.Errorf("%d events, want 8:\n%s", len(events), out1.Bytes())
	}
}

func TestFromFD(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fd, err := unix.Dup(int(w.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	j, err := progress.FromFD(fd)
	if err != nil {
		t.Fatal(err)
	}
	a := blob("a", 10)
	pullWith(j, "r", []types.BlobInfo{a}, nil, ev(newArtifact, a, 0), ev(done, a, 10))
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	// Close closed the descriptor, the pipe's last writer: the read ends.
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	progresstest.CheckPulls(t, validate(t, out))
}

func TestFromFDErrors(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	closed, err := unix.Dup(int(w.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(closed)
	readOnly := int(r.Fd())
	for _, tc := range []struct {
		fd   int
		want string
	}{
		{closed, "is not open"},
		{readOnly, "read-only"},
		{-1, "not a file descriptor"},
	} {
		j, err := progress.FromFD(tc.fd)
		if err == nil {
			j.Close()
			t.Errorf("FromFD(%d) succeeded", tc.fd)
			continue
		}
		if !strings.Contains(err.Error(), "progress fd "+strconv.Itoa(tc.fd)) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("FromFD(%d): %v; want it to name the fd and say %q", tc.fd, err, tc.want)
		}
	}
}

// TestFromFDBrokenPipe: a descriptor no one reads fails at once.
func TestFromFDBrokenPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	fd, err := unix.Dup(int(w.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if j, err := progress.FromFD(fd); err == nil {
		j.Close()
		t.Fatal("FromFD succeeded on a pipe without a reader")
	} else if !strings.Contains(err.Error(), "progress fd "+strconv.Itoa(fd)) {
		t.Errorf("FromFD: %v; want it to name the fd", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err == nil {
		t.Errorf("fd %d still open after a failed FromFD", fd)
	}
}
