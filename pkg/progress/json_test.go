package progress_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/types"

	"github.com/bootstore/bootstore/pkg/progress"
	"github.com/bootstore/bootstore/pkg/progress/progresstest"
)

// syncBuffer is a bytes.Buffer safe to read while a sink writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

func blob(name string, size int64) types.BlobInfo {
	return types.BlobInfo{Digest: digest.FromString(name), Size: size, MediaType: imgspecv1.MediaTypeImageLayerGzip}
}

func ev(kind types.ProgressEvent, info types.BlobInfo, offset uint64) types.ProgressProperties {
	return types.ProgressProperties{Event: kind, Artifact: info, Offset: offset}
}

const (
	newArtifact = types.ProgressEventNewArtifact
	read        = types.ProgressEventRead
	done        = types.ProgressEventDone
	skipped     = types.ProgressEventSkipped
)

// pullWith runs one image pull through sink: the events are sent as
// copy.Image sends them, then finish is called with err.
func pullWith(sink progress.Sink, ref string, layers []types.BlobInfo, err error, events ...types.ProgressProperties) {
	ch, finish := sink.BeginImage(ref, layers)
	for _, e := range events {
		ch <- e
	}
	finish(err)
}

// validate checks every line of out against the schema, and returns the
// events.
func validate(t *testing.T, out []byte) []map[string]any {
	t.Helper()
	events := progresstest.ValidateLines(t, out)
	if len(events) == 0 {
		t.Fatal("no progress events")
	}
	return events
}

// lastFor returns the last event of type typ with id.
func lastFor(t *testing.T, events []map[string]any, typ, id string) map[string]any {
	t.Helper()
	for i := len(events) - 1; i >= 0; i-- {
		if events[i]["type"] == typ && events[i]["id"] == id {
			return events[i]
		}
	}
	t.Fatalf("no %s event for %s", typ, id)
	return nil
}

func wantUints(t *testing.T, ev map[string]any, want map[string]uint64) {
	t.Helper()
	for k, w := range want {
		if got := progresstest.Uint(t, ev, k); got != w {
			t.Errorf("%s: %s = %d, want %d (event %v)", ev["id"], k, got, w, ev)
		}
	}
}

func subtasks(t *testing.T, ev map[string]any) []map[string]any {
	t.Helper()
	raw, ok := ev["subtasks"].([]any)
	if !ok {
		t.Fatalf("subtasks is %T, not an array", ev["subtasks"])
	}
	var subs []map[string]any
	for _, s := range raw {
		subs = append(subs, s.(map[string]any))
	}
	return subs
}

func TestStartFirst(t *testing.T) {
	var out syncBuffer
	j := progress.NewJSON(&out)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := string(out.Bytes()), `{"type":"Start","version":"0.1.0"}`+"\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	validate(t, out.Bytes())
}

func TestPull(t *testing.T) {
	base, cachedLayer, unknown := blob("base", 1000), blob("cached", 500), blob("unknown", -1)
	config := types.BlobInfo{Digest: digest.FromString("config"), Size: 77, MediaType: imgspecv1.MediaTypeImageConfig}
	var out syncBuffer
	j := progress.NewJSON(&out, progress.WithMinInterval(0))
	const ref = "docker://quay.io/example/os:latest"
	pullWith(j, ref, []types.BlobInfo{base, cachedLayer, unknown}, nil,
		ev(newArtifact, base, 0),
		ev(read, base, 100),
		ev(read, base, 400),
		ev(newArtifact, config, 0), // the config is no layer
		ev(read, config, 77),
		ev(done, config, 77),
		ev(skipped, cachedLayer, 0),
		ev(newArtifact, unknown, 0),
		ev(read, unknown, 50),
		ev(done, unknown, 300),
		ev(read, base, 900),
		ev(done, base, 1000),
	)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	events := validate(t, out.Bytes())
	progresstest.CheckPulls(t, events)

	first := events[1]
	wantUints(t, first, map[string]uint64{"bytes": 0, "bytesCached": 0, "bytesTotal": 1500, "steps": 0, "stepsCached": 0, "stepsTotal": 3})
	if len(subtasks(t, first)) != 0 {
		t.Errorf("first event has subtasks: %v", first)
	}
	last := lastFor(t, events, "ProgressBytes", ref)
	if last["task"] != "pulling" || last["description"] != "Pulling Image: "+ref {
		t.Errorf("task/description: %v", last)
	}
	wantUints(t, last, map[string]uint64{"bytes": 1300, "bytesCached": 500, "bytesTotal": 1300, "steps": 2, "stepsCached": 1, "stepsTotal": 2})
	subs := subtasks(t, last)
	if len(subs) != 3 {
		t.Fatalf("subtasks: %v", subs)
	}
	for i, l := range []types.BlobInfo{base, cachedLayer, unknown} {
		s := subs[i]
		if s["subtask"] != "layer" || s["id"] != l.Digest.String() || s["description"] != "Layer: "+l.Digest.Encoded()[:12] {
			t.Errorf("subtask %d: %v", i, s)
		}
		if progresstest.Uint(t, s, "bytes") != progresstest.Uint(t, s, "bytesTotal") {
			t.Errorf("subtask %d not complete: %v", i, s)
		}
	}
	wantUints(t, subs[1], map[string]uint64{"bytesCached": 500, "bytesTotal": 500})
	wantUints(t, subs[2], map[string]uint64{"bytesCached": 0, "bytesTotal": 300})
	for _, e := range events {
		for _, s := range subtasks2(e) {
			if s["id"] == config.Digest.String() {
				t.Errorf("the config is reported as a layer: %v", e)
			}
		}
	}
}

func subtasks2(ev map[string]any) []map[string]any {
	raw, _ := ev["subtasks"].([]any)
	var subs []map[string]any
	for _, s := range raw {
		subs = append(subs, s.(map[string]any))
	}
	return subs
}

// TestPartialPull: a partial pull fetches only some of a blob; the rest the
// store had, so it is cached.
func TestPartialPull(t *testing.T) {
	a := blob("a", 1000)
	var out syncBuffer
	j := progress.NewJSON(&out, progress.WithMinInterval(0))
	pullWith(j, "r", []types.BlobInfo{a}, nil,
		ev(newArtifact, a, 0),
		ev(read, a, 200),
		ev(done, a, 300),
	)
	j.Close()
	events := validate(t, out.Bytes())
	progresstest.CheckPulls(t, events)
	last := lastFor(t, events, "ProgressBytes", "r")
	wantUints(t, last, map[string]uint64{"bytes": 300, "bytesCached": 700, "bytesTotal": 300, "steps": 1, "stepsTotal": 1})
	wantUints(t, subtasks(t, last)[0], map[string]uint64{"bytes": 1000, "bytesCached": 700, "bytesTotal": 1000})
}

// TestDuplicateLayers: a manifest may list one blob twice; each is a layer.
func TestDuplicateLayers(t *testing.T) {
	a, b := blob("a", 10), blob("b", 20)
	var out syncBuffer
	j := progress.NewJSON(&out, progress.WithMinInterval(0))
	pullWith(j, "r", []types.BlobInfo{a, b, a}, nil,
		ev(newArtifact, a, 0),
		ev(newArtifact, b, 0),
		ev(done, a, 10),
		ev(skipped, a, 0),
		ev(done, b, 20),
	)
	j.Close()
	events := validate(t, out.Bytes())
	progresstest.CheckPulls(t, events)
	last := lastFor(t, events, "ProgressBytes", "r")
	wantUints(t, last, map[string]uint64{"bytes": 30, "bytesCached": 10, "bytesTotal": 30, "steps": 2, "stepsCached": 1, "stepsTotal": 2})
	if n := len(subtasks(t, last)); n != 3 {
		t.Errorf("%d subtasks, want 3", n)
	}
}

// TestUnknownLayers: without a layer list, the layers are taken from the
// events, but not the config.
func TestUnknownLayers(t *testing.T) {
	a, b := blob("a", 10), blob("b", 20)
	config := types.BlobInfo{Digest: digest.FromString("config"), Size: 5, MediaType: "application/vnd.docker.container.image.v1+json"}
	var out syncBuffer
	j := progress.NewJSON(&out, progress.WithMinInterval(0))
	pullWith(j, "r", nil, nil,
		ev(skipped, b, 0),
		ev(newArtifact, a, 0),
		ev(read, a, 5),
		ev(newArtifact, config, 0),
		ev(done, config, 5),
		ev(done, a, 10),
	)
	j.Close()
	events := validate(t, out.Bytes())
	progresstest.CheckPulls(t, events)
	last := lastFor(t, events, "ProgressBytes", "r")
	wantUints(t, last, map[string]uint64{"bytes": 10, "bytesCached": 20, "bytesTotal": 10, "steps": 1, "stepsCached": 1, "stepsTotal": 1})
	if n := len(subtasks(t, last)); n != 2 {
		t.Errorf("%d subtasks, want 2", n)
	}
}

// TestNoEventsSucceeds: copy.Image sends nothing without a ProgressInterval;
// the final event still reports the pull complete.
func TestNoEventsSucceeds(t *testing.T) {
	var out syncBuffer
	j := progress.NewJSON(&out)
	pullWith(j, "r", []types.BlobInfo{blob("a", 10), blob("b", -1)}, nil)
	j.Close()
	events := validate(t, out.Bytes())
	progresstest.CheckPulls(t, events)
	wantUints(t, lastFor(t, events, "ProgressBytes", "r"), map[string]uint64{"stepsCached": 2, "stepsTotal": 0, "bytesCached": 10})
}

// TestFailedPull: a failed pull ends with what was done, not complete.
func TestFailedPull(t *testing.T) {
	a, b := blob("a", 1000), blob("b", 10)
	var out syncBuffer
	j := progress.NewJSON(&out, progress.WithMinInterval(0))
	pullWith(j, "r", []types.BlobInfo{a, b}, errors.New("connection reset"),
		ev(newArtifact, b, 0),
		ev(done, b, 10),
		ev(newArtifact, a, 0),
		ev(read, a, 400),
	)
	j.Close()
	events := validate(t, out.Bytes())
	last := lastFor(t, events, "ProgressBytes", "r")
	wantUints(t, last, map[string]uint64{"bytes": 410, "bytesTotal": 1010, "steps": 1, "stepsTotal": 2})
}

// TestFinishTwice: a second finish does nothing.
func TestFinishTwice(t *testing.T) {
	var out syncBuffer
	j := progress.NewJSON(&out)
	_, finish := j.BeginImage("r", []types.BlobInfo{blob("a", 1)})
	finish(nil)
	finish(nil)
	j.Close()
	if n := bytes.Count(out.Bytes(), []byte("\n")); n != 3 {
		t.Errorf("%d lines, want 3 (Start, first, final):\n%s", n, out.Bytes())
	}
}

// TestThrottle: byte counts are written at most every interval; finished
// layers and the end of the pull are always written.
func TestThrottle(t *testing.T) {
	layers := []types.BlobInfo{blob("a", 1<<20), blob("b", 1<<20)}
	var out syncBuffer
	j := progress.NewJSON(&out, progress.WithMinInterval(time.Hour))
	var events []types.ProgressProperties
	for _, l := range layers {
		events = append(events, ev(newArtifact, l, 0))
		for off := uint64(1); off <= 1<<20; off += 1 << 10 {
			events = append(events, ev(read, l, off))
		}
		events = append(events, ev(done, l, 1<<20))
	}
	pullWith(j, "r", layers, nil, events...)
	j.Close()
	got := validate(t, out.Bytes())
	progresstest.CheckPulls(t, got)
	// Start, the first event, one per finished layer, the final one.
	if len(got) != 5 {
		t.Errorf("%d events, want 5:\n%s", len(got), out.Bytes())
	}
}

// TestThrottleFlush: a change held back is written once the interval has
// passed, without waiting for another event.
func TestThrottleFlush(t *testing.T) {
	a := blob("a", 1000)
	var out syncBuffer
	j := progress.NewJSON(&out, progress.WithMinInterval(20*time.Millisecond))
	ch, finish := j.BeginImage("r", []types.BlobInfo{a})
	ch <- ev(newArtifact, a, 0)
	ch <- ev(read, a, 123)
	deadline := time.Now().Add(10 * time.Second)
	for !bytes.Contains(out.Bytes(), []byte(`"bytes":123,`)) {
		if time.Now().After(deadline) {
			t.Fatalf("the held-back read was never written:\n%s", out.Bytes())
		}
		time.Sleep(5 * time.Millisecond)
	}
	ch <- ev(done, a, 1000)
	finish(nil)
	j.Close()
	progresstest.CheckPulls(t, validate(t, out.Bytes()))
}

func TestSteps(t *testing.T) {
	var out syncBuffer
	j := progress.NewJSON(&out)
	j.Steps("bound-images", "Pulling bound images", "quay.io/example/os:1", 0, 2, nil)
	j.Steps("bound-images", "Pulling bound images", "quay.io/example/os:1", 1, 2, []progress.SubTaskStep{
		{Subtask: "bound-image", Description: "Bound image: a", ID: "a", Completed: true},
		{Subtask: "bound-image", Description: "Bound image: b", ID: "b"},
	})
	j.Close()
	events := validate(t, out.Bytes())
	if len(events) != 3 {
		t.Fatalf("%d events, want 3", len(events))
	}
	if !strings.Contains(string(out.Bytes()), `"subtasks":[]`) {
		t.Errorf("nil subtasks not written as []:\n%s", out.Bytes())
	}
	last := lastFor(t, events, "ProgressSteps", "quay.io/example/os:1")
	wantUints(t, last, map[string]uint64{"steps": 1, "stepsTotal": 2, "stepsCached": 0})
	subs := subtasks(t, last)
	if len(subs) != 2 || subs[0]["completed"] != true || subs[1]["completed"] != false {
		t.Errorf("subtasks: %v", subs)
	}
}

// TestConcurrent pulls several images at once, as bound images are, with
// Steps reported between them.
func TestConcurrent(t *testing.T) {
	var out syncBuffer
	j := progress.NewJSON(&out, progress.WithMinInterval(time.Millisecond))
	const images = 6
	var wg sync.WaitGroup
	var mu sync.Mutex
	var finished uint64
	for i := range images {
		wg.Go(func() {
			ref := fmt.Sprintf("docker://registry.example/app%d:1", i)
			var layers []types.BlobInfo
			var events []types.ProgressProperties
			for k := range 4 {
				size := int64(1000 * (k + 1))
				if k == 3 {
					size = -1
				}
				l := blob(fmt.Sprintf("%d-%d", i, k), size)
				layers = append(layers, l)
				if k == 1 && i%2 == 0 {
					events = append(events, ev(skipped, l, 0))
					continue
				}
				events = append(events, ev(newArtifact, l, 0))
				for off := uint64(100); off < 1000; off += 100 {
					events = append(events, ev(read, l, off))
				}
				events = append(events, ev(done, l, 1000*uint64(k+1)))
			}
			pullWith(j, ref, layers, nil, events...)
			mu.Lock()
			finished++
			j.Steps("bound-images", "Pulling bound images", "host", finished, images, nil)
			mu.Unlock()
		})
	}
	wg.Wait()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	events := validate(t, out.Bytes())
	progresstest.CheckPulls(t, events)
	for i := range images {
		ref := fmt.Sprintf("docker://registry.example/app%d:1", i)
		last := lastFor(t, events, "ProgressBytes", ref)
		if i%2 == 0 {
			wantUints(t, last, map[string]uint64{"bytes": 8000, "bytesCached": 2000, "steps": 3, "stepsCached": 1, "stepsTotal": 3})
		} else {
			wantUints(t, last, map[string]uint64{"bytes": 10000, "bytesCached": 0, "steps": 4, "stepsTotal": 4})
		}
	}
	wantUints(t, lastFor(t, events, "ProgressSteps", "host"), map[string]uint64{"steps": images, "stepsTotal": images})
}

type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n == 0 {
		return 0, errors.New("broken pipe")
	}
	w.n--
	return len(p), nil
}

// TestWriteError: a failed write stops the stream, and Close reports it; the
// pull itself goes on.
func TestWriteError(t *testing.T) {
	w := &failingWriter{n: 2}
	j := progress.NewJSON(w, progress.WithMinInterval(0))
	a := blob("a", 10)
	pullWith(j, "r", []types.BlobInfo{a}, nil, ev(newArtifact, a, 0), ev(read, a, 5), ev(done, a, 10))
	j.Steps("t", "d", "i", 0, 1, nil)
	err := j.Close()
	if err == nil || !strings.Contains(err.Error(), "broken pipe") {
		t.Errorf("Close: %v, want the write error", err)
	}
	if err2 := j.Close(); err2 != err {
		t.Errorf("second Close: %v, want %v", err2, err)
	}
}

// TestAfterClose: events after Close are dropped; a pull begun before Close
// can still be finished.
func TestAfterClose(t *testing.T) {
	var out syncBuffer
	j := progress.NewJSON(&out, progress.WithMinInterval(time.Hour))
	a := blob("a", 10)
	ch, finish := j.BeginImage("r", []types.BlobInfo{a})
	ch <- ev(newArtifact, a, 0)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	ch <- ev(done, a, 10)
	finish(nil)
	j.Steps("t", "d", "i", 0, 1, nil)
	pullWith(j, "r2", nil, nil)
	if n := bytes.Count(out.Bytes(), []byte("\n")); n != 2 {
		t.Errorf("%d lines, want 2 (Start, first):\n%s", n, out.Bytes())
	}
	validate(t, out.Bytes())
}
