// Command demo shows bootstore's main job on this machine with nothing but
// what it starts itself: a local registry, a host installed into one
// unified store on a loop-mounted XFS, podman running a bound image from
// that store, a partial (zstd:chunked) upgrade, finalization with the /etc
// merge, a simulated reboot, rollback, gc, and a closing summary of bytes
// fetched, disk used against a split host and time per step.
//
// Run it with `sudo make demo` (root: overlay mounts and podman).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"

	"github.com/bootstore/bootstore/tests/harness"
)

func main() {
	t := &demoT{}
	code := 0
	func() {
		defer func() {
			if r := recover(); r != nil {
				if !errors.Is(asError(r), errFatal) {
					panic(r)
				}
				code = 1
			}
		}()
		run(t)
	}()
	t.cleanup()
	if t.failed {
		code = 1
	}
	os.Exit(code)
}

// runTee runs bin with args, printing its stdout and stderr as they come
// (unless quiet) and returning its stdout.
func runTee(bin string, args []string, quiet bool) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, io.Discard
	if !quiet {
		cmd.Stdout, cmd.Stderr = io.MultiWriter(&out, os.Stdout), os.Stderr
	}
	err := cmd.Run()
	return out.String(), err
}

// deploymentIn reads the deployment name of slot (booted, staged,
// rollback) from a `status --format json` document.
func deploymentIn(statusJSON, slot string) (string, error) {
	var doc struct {
		Status map[string]json.RawMessage
	}
	if err := json.Unmarshal([]byte(statusJSON), &doc); err != nil {
		return "", err
	}
	var entry *struct{ Bootstore struct{ Deployment string } }
	if err := json.Unmarshal(doc.Status[slot], &entry); err != nil || entry == nil {
		return "", fmt.Errorf("no %s deployment in status", slot)
	}
	return entry.Bootstore.Deployment, nil
}

func step(s string) { fmt.Printf("\n==> %s\n", s) }

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// demoT lets the test harness run outside `go test`: failures print and
// stop the demo, cleanups run at exit. The embedded interface is never
// called; it only completes testing.TB's method set.
type demoT struct {
	testing.TB
	cleanups []func()
	failed   bool
	dirs     int
}

var errFatal = errors.New("demo failed")

func asError(r any) error {
	if err, ok := r.(error); ok {
		return err
	}
	return nil
}

func (t *demoT) Helper()                 {}
func (t *demoT) Cleanup(f func())        { t.cleanups = append(t.cleanups, f) }
func (t *demoT) Failed() bool            { return t.failed }
func (t *demoT) Logf(f string, a ...any) { fmt.Printf("  "+f+"\n", a...) }
func (t *demoT) Error(a ...any) {
	t.failed = true
	fmt.Fprintln(os.Stderr, append([]any{"ERROR:"}, a...)...)
}
func (t *demoT) Errorf(f string, a ...any) { t.Error(fmt.Sprintf(f, a...)) }
func (t *demoT) Fatal(a ...any)            { t.Error(a...); panic(errFatal) }
func (t *demoT) Fatalf(f string, a ...any) { t.Fatal(fmt.Sprintf(f, a...)) }
func (t *demoT) Skip(a ...any)             { t.Fatal(append([]any{"cannot run the demo:"}, a...)...) }
func (t *demoT) Skipf(f string, a ...any)  { t.Skip(fmt.Sprintf(f, a...)) }
func (t *demoT) TempDir() string {
	dir, err := os.MkdirTemp("", "bootstore-demo-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		harness.UnmountUnder(dir)
		os.RemoveAll(dir)
	})
	return dir
}

func (t *demoT) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}
