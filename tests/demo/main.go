// Command demo shows bootstore's main job on this machine with nothing but
// what it starts itself: a local registry holding an OS image that binds
// three app images, one pull into a unified store, podman running an app
// from that store, and a second pull that downloads nothing.
//
// Run it with `sudo make demo` (root: overlay mounts and podman).
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

func run(t *demoT) {
	bin, err := filepath.Abs("bin/bootstore")
	if err != nil || !exists(bin) {
		t.Fatalf("bin/bootstore is missing: run `make build` (or `make demo`) first")
	}
	harness.RequireRoot(t)

	step("Starting a registry on 127.0.0.1 (Debian's docker-registry behind a counting proxy)")
	reg := harness.StartRegistry(t)
	fmt.Println("  registry:", reg.Addr)

	step("Building and pushing three app images and an OS image that binds them")
	apps := map[string]string{"web": reg.Ref("apps/web:1.0"), "logger": reg.Ref("apps/logger:1.0"), "metrics": reg.Ref("apps/metrics:latest")}
	for name, ref := range apps {
		reg.Push(t, harness.AppImage(t, name), strings.TrimPrefix(ref, reg.Addr+"/"), "gzip")
		fmt.Println("  pushed", ref)
	}
	metrics := harness.BoundImage("metrics", apps["metrics"])
	metrics.AbsoluteLink = true
	osImg := harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "42", BoundImages: []harness.Bound{
		harness.BoundImage("web", apps["web"]), harness.BoundContainer("logger", apps["logger"]), metrics,
	}})
	osRef := reg.Ref("demo/os:42")
	reg.Push(t, osImg, "demo/os:42", "gzip")
	fmt.Println("  pushed", osRef, "with /usr/lib/bootc/bound-images.d/{web.image,logger.container,metrics.image}")

	sysroot := t.TempDir()
	policy := harness.PolicyFile(t)
	boot := func(args ...string) {
		full := append([]string{"--sysroot", sysroot}, args...)
		fmt.Printf("\n$ bootstore %s\n", strings.Join(full, " "))
		cmd := exec.Command(bin, full...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("bootstore %s: %v", strings.Join(args, " "), err)
		}
	}

	step("Pulling the OS image and its bound images into ONE store")
	reg.ResetStats()
	boot("image", "pull", "--tls-verify=false", "--signature-policy", policy, osRef)
	first := reg.Stats()
	boot("image", "list")

	step("podman reads the same store: no second pull")
	podman := harness.PodmanOn(t, filepath.Join(sysroot, "ostree/bootc/storage"), "overlay")
	for _, args := range [][]string{{"images"}, {"run", "--rm", apps["web"], "cat", "/usr/share/harness-app/web"}} {
		fmt.Printf("\n$ podman --root %s %s\n", podman.Root, strings.Join(args, " "))
		out, err := podman.Run(t, args...)
		fmt.Print(out)
		if err != nil {
			t.Fatalf("podman %s: %v", strings.Join(args, " "), err)
		}
	}

	step("Pulling again: every digest matches the store, so no blob is downloaded")
	reg.ResetStats()
	boot("image", "pull", "--tls-verify=false", "--signature-policy", policy, osRef)
	again := reg.Stats()
	fmt.Printf("\nregistry traffic: first pull %d blob downloads (%d bytes); second pull %d blob downloads, %d manifest requests\n",
		first.BlobGETs, first.BlobBytes, again.BlobGETs, again.ManifestGETs)
	if again.BlobGETs != 0 {
		t.Errorf("the second pull downloaded %d blobs", again.BlobGETs)
	}
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
