package progress_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/types"

	"github.com/bootstore/bootstore/pkg/progress"
	"github.com/bootstore/bootstore/pkg/progress/progresstest"
)

// FuzzJSONPull drives one image pull through the JSON sink with an event
// sequence decoded from the fuzzer's bytes: layers of known and unknown
// size, events for layers, for the config and for blobs the pull does not
// list, offsets that jump, repeat or go back, skipped and finished layers,
// then success or failure; and a Steps event with arbitrary strings.
// Properties: every event is one JSON object on one line, the first a
// Start (the schema check is progresstest's, in the other tests); for a successful
// pull the counters never go down, never pass their totals, and the last
// event reports the pull complete (progresstest.CheckPulls).
func FuzzJSONPull(f *testing.F) {
	f.Add([]byte{2, 10, 20, 0, 0, 0, 1, 0, 5, 3, 0, 10, 0, 1, 0, 2, 1, 20}, false, "pulling", "Pulling Image")
	f.Add([]byte{3, 255, 0, 7, 2, 1, 0, 1, 1, 9, 1, 0, 200, 3, 2, 0, 1, 2, 50, 0, 2, 40}, true, "", "\xff\x00\"")
	f.Add([]byte{0}, false, "t", "d")
	f.Fuzz(func(t *testing.T, data []byte, fail bool, task, desc string) {
		next := func() byte {
			if len(data) == 0 {
				return 0
			}
			b := data[0]
			data = data[1:]
			return b
		}
		n := int(next()%4) + 1
		layers := make([]types.BlobInfo, n)
		for i := range layers {
			size := int64(next()) * 16
			if size == 255*16 {
				size = -1 // unknown size, as some registries report
			}
			layers[i] = blob(fmt.Sprintf("layer%d-%d", i, size), size)
		}
		config := types.BlobInfo{Digest: digest.FromString("config"), Size: 42}
		kinds := []types.ProgressEvent{newArtifact, read, done, skipped}
		var events []types.ProgressProperties
		for len(data) >= 3 {
			kind, which, off := kinds[next()%4], next(), uint64(next())*8
			var info types.BlobInfo
			switch {
			case int(which) < n:
				info = layers[which]
			case which%2 == 0:
				info = config
			default:
				info = blob(fmt.Sprintf("stranger%d", which), int64(which))
			}
			events = append(events, ev(kind, info, off))
		}
		var err error
		if fail {
			err = errors.New("registry went away")
		}
		var out syncBuffer
		j := progress.NewJSON(&out, progress.WithMinInterval(0))
		const ref = "docker://quay.io/example/os:latest"
		pullWith(j, ref, layers, err, events...)
		j.Steps(task, desc, "id-"+task, uint64(len(events)), uint64(len(events)+n), []progress.SubTaskStep{{Subtask: task, Description: desc, ID: desc, Completed: fail}})
		if cerr := j.Close(); cerr != nil {
			t.Fatal(cerr)
		}
		got := decodeLines(t, out.Bytes())
		if !fail {
			var pulls []map[string]any
			for _, e := range got {
				if e["type"] == "ProgressBytes" {
					pulls = append(pulls, e)
				}
			}
			progresstest.CheckPulls(t, pulls)
		}
	})
}

// decodeLines decodes a JSON Lines stream: one object per line, each with a
// type, the first a Start.
func decodeLines(t *testing.T, out []byte) []map[string]any {
	t.Helper()
	if len(out) == 0 || out[len(out)-1] != '\n' {
		t.Fatalf("the stream does not end with a newline: %q", out)
	}
	var events []map[string]any
	for i, line := range bytes.Split(bytes.TrimSuffix(out, []byte("\n")), []byte("\n")) {
		var ev map[string]any
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatalf("line %d is not a JSON object: %v: %q", i+1, err, line)
		}
		if _, ok := ev["type"].(string); !ok || i == 0 && ev["type"] != "Start" {
			t.Fatalf("line %d: type %v: %q", i+1, ev["type"], line)
		}
		events = append(events, ev)
	}
	return events
}
