package progresstest_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/bootstore/bootstore/pkg/progress/progresstest"
)

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

// run calls f with a recorder, and returns what it recorded.
func run(t *testing.T, f func(tb testing.TB)) []string {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.errors
}

const (
	start = `{"type":"Start","version":"0.1.0"}`
	steps = `{"type":"ProgressSteps","task":"t","description":"d","id":"i","stepsCached":0,"steps":0,"stepsTotal":1,"subtasks":[]}`
)

func bytesEvent(bytes, total, steps, stepsTotal int) string {
	return fmt.Sprintf(`{"type":"ProgressBytes","task":"pulling","description":"d","id":"r","bytesCached":0,"bytes":%d,"bytesTotal":%d,"stepsCached":0,"steps":%d,"stepsTotal":%d,"subtasks":[]}`,
		bytes, total, steps, stepsTotal)
}

func TestValidateLines(t *testing.T) {
	good := strings.Join([]string{start, bytesEvent(0, 10, 0, 1), steps, bytesEvent(10, 10, 1, 1)}, "\n") + "\n"
	var events []map[string]any
	if errs := run(t, func(tb testing.TB) { events = progresstest.ValidateLines(tb, []byte(good)) }); len(errs) != 0 {
		t.Fatalf("valid stream rejected: %v", errs)
	}
	if len(events) != 4 || events[2]["type"] != "ProgressSteps" {
		t.Errorf("events: %v", events)
	}
	if errs := run(t, func(tb testing.TB) { progresstest.CheckPulls(tb, events) }); len(errs) != 0 {
		t.Errorf("CheckPulls: %v", errs)
	}

	for name, stream := range map[string]string{
		"no Start first":      bytesEvent(0, 10, 0, 1) + "\n",
		"no final newline":    start,
		"empty line":          start + "\n\n",
		"not JSON":            start + "\n{\n",
		"two values":          start + "\n" + start + start + "\n",
		"null subtasks":       start + "\n" + strings.Replace(steps, `"subtasks":[]`, `"subtasks":null`, 1) + "\n",
		"missing subtasks":    start + "\n" + strings.Replace(steps, `,"subtasks":[]`, ``, 1) + "\n",
		"missing bytesCached": start + "\n" + strings.Replace(bytesEvent(0, 1, 0, 1), `"bytesCached":0,`, ``, 1) + "\n",
		"negative bytes":      start + "\n" + bytesEvent(-1, 10, 0, 1) + "\n",
		"fractional bytes":    start + "\n" + strings.Replace(bytesEvent(0, 10, 0, 1), `"bytes":0`, `"bytes":0.5`, 1) + "\n",
		"beyond uint64":       start + "\n" + strings.Replace(bytesEvent(0, 10, 0, 1), `"bytesTotal":10`, `"bytesTotal":18446744073709551616`, 1) + "\n",
		"unknown type":        start + "\n" + `{"type":"End"}` + "\n",
		"subtask missing id":  start + "\n" + strings.Replace(steps, `"subtasks":[]`, `"subtasks":[{"subtask":"s","description":"d","completed":true}]`, 1) + "\n",
	} {
		if errs := run(t, func(tb testing.TB) { progresstest.ValidateLines(tb, []byte(stream)) }); len(errs) == 0 {
			t.Errorf("%s: accepted %q", name, stream)
		}
	}
}

func TestCheckPulls(t *testing.T) {
	for name, tc := range map[string]struct {
		lines []string
		ok    bool
	}{
		"complete":         {[]string{bytesEvent(0, 10, 0, 1), bytesEvent(5, 10, 0, 1), bytesEvent(10, 10, 1, 1)}, true},
		"pulled twice":     {[]string{bytesEvent(0, 10, 0, 1), bytesEvent(10, 10, 1, 1), bytesEvent(0, 10, 0, 1), bytesEvent(10, 10, 1, 1)}, true},
		"incomplete":       {[]string{bytesEvent(0, 10, 0, 1), bytesEvent(5, 10, 0, 1)}, false},
		"bytes went down":  {[]string{bytesEvent(6, 10, 0, 1), bytesEvent(5, 10, 0, 1), bytesEvent(10, 10, 1, 1)}, false},
		"bytes over total": {[]string{bytesEvent(11, 10, 0, 1), bytesEvent(10, 10, 1, 1)}, false},
		"steps went down":  {[]string{bytesEvent(0, 20, 1, 2), bytesEvent(1, 20, 0, 2), bytesEvent(20, 20, 2, 2)}, false},
	} {
		stream := start + "\n" + strings.Join(tc.lines, "\n") + "\n"
		var events []map[string]any
		if errs := run(t, func(tb testing.TB) { events = progresstest.ValidateLines(tb, []byte(stream)) }); len(errs) != 0 {
			t.Fatalf("%s: %v", name, errs)
		}
		errs := run(t, func(tb testing.TB) { progresstest.CheckPulls(tb, events) })
		if ok := len(errs) == 0; ok != tc.ok {
			t.Errorf("%s: CheckPulls ok = %v, want %v (%v)", name, ok, tc.ok, errs)
		}
	}
}
