// Package progresstest checks progress output in tests: that every line of a
// --progress-fd stream is valid against bootc's progress schema, and that the
// pulls it reports make sense.
package progresstest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/bootstore/bootstore/pkg/bootcschema"
)

var (
	schemaOnce sync.Once
	schema     *jsonschema.Schema
	schemaErr  error
)

// compile returns bootc's progress schema (embedded by pkg/bootcschema),
// compiled once per process. The schema's "uint64" format is asserted: an
// integer from 0 to 2^64-1.
func compile() (*jsonschema.Schema, error) {
	schemaOnce.Do(func() {
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(bootcschema.ProgressV0))
		if err != nil {
			schemaErr = err
			return
		}
		c := jsonschema.NewCompiler()
		c.AssertFormat()
		c.RegisterFormat(&jsonschema.Format{Name: "uint64", Validate: validateUint64})
		if err := c.AddResource(bootcschema.ProgressV0URL, doc); err != nil {
			schemaErr = err
			return
		}
		schema, schemaErr = c.Compile(bootcschema.ProgressV0URL)
	})
	return schema, schemaErr
}

func validateUint64(v any) error {
	n, ok := v.(json.Number)
	if !ok {
		return nil // not a number: the "type" keyword speaks to that
	}
	if _, err := strconv.ParseUint(n.String(), 10, 64); err != nil {
		return fmt.Errorf("%s is not a uint64", n)
	}
	return nil
}

// ValidateLines checks data as a progress stream: JSON Lines (every line,
// the last one too, ends in a newline; no line is empty), every line valid
// against bootc's progress schema, and the first event a Start. It fails
// the test for every bad line, and returns the events decoded as by
// encoding/json (numbers are float64; see Uint).
func ValidateLines(t testing.TB, data []byte) []map[string]any {
	t.Helper()
	sch, err := compile()
	if err != nil {
		t.Fatalf("compiling bootc's progress schema: %v", err)
	}
	if len(data) == 0 {
		return nil
	}
	if data[len(data)-1] != '\n' {
		t.Errorf("progress stream: the last line does not end in a newline: %q", lastLine(data))
	}
	var events []map[string]any
	for i, line := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
		n := i + 1
		if len(line) == 0 {
			t.Errorf("progress line %d is empty", n)
			continue
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(line))
		if err != nil {
			t.Errorf("progress line %d is not JSON: %v: %s", n, err, line)
			continue
		}
		if err := sch.Validate(inst); err != nil {
			t.Errorf("progress line %d is invalid: %s\n%v", n, line, err)
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Errorf("progress line %d is not a JSON object: %v: %s", n, err, line)
			continue
		}
		if len(events) == 0 && ev["type"] != "Start" {
			t.Errorf("progress line %d: the first event is %v, not Start: %s", n, ev["type"], line)
		}
		events = append(events, ev)
	}
	return events
}

func lastLine(data []byte) []byte {
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		return data[i+1:]
	}
	return data
}

// Uint returns the number ev[key] as a uint64, failing the test if it is not
// a non-negative integer.
func Uint(t testing.TB, ev map[string]any, key string) uint64 {
	t.Helper()
	f, ok := ev[key].(float64)
	if !ok || f < 0 || f != float64(uint64(f)) {
		t.Fatalf("progress event %v: %s is %v, not a non-negative integer", ev["type"], key, ev[key])
	}
	return uint64(f)
}

// CheckPulls checks the ProgressBytes events of events (as ValidateLines
// returns them) pull by pull, a pull being the events with one id up to the
// first that reports it complete: bytes, bytesCached, steps and stepsCached
// never decrease, bytes never exceeds bytesTotal nor steps stepsTotal, and
// every pull ends with an event that has bytes == bytesTotal and steps ==
// stepsTotal. Use it for runs whose pulls all succeeded.
func CheckPulls(t testing.TB, events []map[string]any) {
	t.Helper()
	type pull struct {
		last     map[string]any
		complete bool
	}
	pulls := map[string]*pull{}
	var order []string
	for i, ev := range events {
		if ev["type"] != "ProgressBytes" {
			continue
		}
		id, _ := ev["id"].(string)
		where := fmt.Sprintf("progress event %d (%s)", i+1, id)
		bytes, total := Uint(t, ev, "bytes"), Uint(t, ev, "bytesTotal")
		steps, stepsTotal := Uint(t, ev, "steps"), Uint(t, ev, "stepsTotal")
		if bytes > total {
			t.Errorf("%s: bytes %d > bytesTotal %d", where, bytes, total)
		}
		if steps > stepsTotal {
			t.Errorf("%s: steps %d > stepsTotal %d", where, steps, stepsTotal)
		}
		p := pulls[id]
		if p == nil {
			p = &pull{}
			pulls[id] = p
			order = append(order, id)
		}
		if p.last != nil && !p.complete {
			for _, k := range []string{"bytes", "bytesCached", "steps", "stepsCached"} {
				if was, now := Uint(t, p.last, k), Uint(t, ev, k); now < was {
					t.Errorf("%s: %s went down from %d to %d", where, k, was, now)
				}
			}
		}
		p.last = ev
		p.complete = bytes == total && steps == stepsTotal
	}
	for _, id := range order {
		if p := pulls[id]; !p.complete {
			t.Errorf("pull of %s: the last event is not complete: bytes %v of %v, steps %v of %v",
				id, p.last["bytes"], p.last["bytesTotal"], p.last["steps"], p.last["stepsTotal"])
		}
	}
}
