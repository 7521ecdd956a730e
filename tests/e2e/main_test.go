// Package e2e runs the bootstore binary against a real registry
// (docker-registry), real podman and skopeo, and the kernel's overlayfs.
// The tests need root and those Debian packages (make deps); they skip with
// the reason when something is missing.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootstore/bootstore/tests/harness"
)

// bootstoreBin is built once by TestMain.
var bootstoreBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bootstore-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bootstoreBin = filepath.Join(dir, "bootstore")
	build := exec.Command("go", "build", "-buildvcs=false",
		"-tags", "containers_image_openpgp,exclude_graphdriver_btrfs",
		"-o", bootstoreBin, "github.com/bootstore/bootstore/cmd/bootstore")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building bootstore:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// host is one test host: a sysroot directory and what bootstore needs to
// reach the test registry.
type host struct {
	t       *testing.T
	root    string
	policy  string
	env     []string
	podmanC harness.Podman
}

// newHost makes an empty sysroot in a fresh directory. Mounts left under it
// are undone at cleanup, even when the test fails.
func newHost(t *testing.T) *host {
	t.Helper()
	harness.RequireRoot(t)
	return newHostAt(t, t.TempDir())
}

// newHostAt is newHost with the sysroot at root, e.g. on a loop-mounted
// filesystem.
func newHostAt(t *testing.T, root string) *host {
	t.Helper()
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { harness.UnmountUnder(root) })
	h := &host{t: t, root: root, policy: harness.PolicyFile(t)}
	h.podmanC = harness.PodmanOn(t, h.storageRoot(), "overlay")
	return h
}

func (h *host) storageRoot() string { return filepath.Join(h.root, "ostree/bootc/storage") }

// result is what one bootstore run printed and returned.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// command prepares `bootstore --sysroot ROOT args...`.
func (h *host) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bootstoreBin, append([]string{"--sysroot", h.root}, args...)...)
	cmd.Env = append(os.Environ(), h.env...)
	return cmd
}

// run runs bootstore and returns what it did, whatever the exit code.
func (h *host) run(args ...string) result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := h.command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatalf("running bootstore %v: %v", args, err)
	}
	return res
}

// ok runs bootstore and fails the test unless it exits 0.
func (h *host) ok(args ...string) result {
	h.t.Helper()
	res := h.run(args...)
	if res.code != 0 {
		h.t.Fatalf("bootstore %s failed:\n%s", strings.Join(args, " "), res)
	}
	return res
}

// pullArgs are the registry flags every pull from the test registry needs.
func (h *host) pullArgs(args ...string) []string {
	return append([]string{"image", "pull", "--tls-verify=false", "--signature-policy", h.policy}, args...)
}
