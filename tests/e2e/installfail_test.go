package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/tests/harness"
)

// manyFilesImage is a bootable image with n small files in one layer.
func manyFilesImage(t *testing.T, n int) harness.Image {
	t.Helper()
	var l harness.Layer
	for i := 0; i < n; i++ {
		l = append(l, harness.Entry{Path: fmt.Sprintf("/usr/share/many/d%02d/f%05d", i%50, i), Type: harness.File, Data: []byte(strings.Repeat("x", 64+i%512))})
	}
	return harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "many", ExtraLayers: []harness.Layer{harness.WithParents(l)}})
}

// leftovers lists staging and temporary entries in a stateroot's deploy dir.
func (h *host) leftovers() []string {
	entries, _ := os.ReadDir(filepath.Join(h.root, "ostree/deploy/default/deploy"))
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || strings.Contains(e.Name(), ".tmp-") {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestInstallOnTooSmallFilesystemLeavesNothing(t *testing.T) {
	h := newHost(t)
	if err := unix.Mount("tmpfs", h.root, "tmpfs", 0, "size=14m"); err != nil {
		t.Skipf("mounting a small tmpfs: %v", err)
	}
	reg := harness.StartRegistry(t)
	// 9 MB that compress well: the pull fits, a second (copied) 9 MB does not.
	big := harness.WithParents(harness.Layer{{Path: "/usr/share/big/text", Type: harness.File, Data: []byte(strings.Repeat("bootstore fills the disk\n", 9<<20/25))}})
	reg.Push(t, harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "big", ExtraLayers: []harness.Layer{big}}), "os:big", "gzip")
	ref := reg.Ref("os:big")
	res := h.run(h.installArgs(ref, "--experimental-unified-storage", "--copy-mode", "copy")...)
	t.Logf("bootstore said: %s", strings.TrimSpace(res.stderr))
	if res.code == 0 {
		t.Fatalf("install into a filesystem too small for the deployment succeeded:\n%s", res)
	}
	if !strings.Contains(res.stderr, "no space left on device") && !strings.Contains(res.stderr, "insufficient free space") {
		t.Errorf("the error does not say the disk is full:\n%s", res.stderr)
	}
	if !strings.Contains(res.stderr, ref) {
		t.Errorf("the error does not name the image %s:\n%s", ref, res.stderr)
	}
	if deps, left := h.deployments("default"), h.leftovers(); len(deps)+len(left) != 0 {
		t.Errorf("a failed deployment left %v %v", deps, left)
	}
	if entries, _ := filepath.Glob(filepath.Join(h.root, "boot/loader/entries/*")); len(entries) != 0 {
		t.Errorf("a failed install wrote boot entries: %v", entries)
	}
	if infos := h.list(); len(infos) != 1 || byName(infos, ref) == nil {
		t.Errorf("the store should still hold the pulled image: %+v", infos)
	}
	if orphans := h.orphanLayers(); len(orphans) != 0 {
		t.Errorf("orphan layers: %v", orphans)
	}
}

// SIGKILL while the deployment is being written; the rerun resumes the
// interrupted install, succeeds and removes what the killed run left.
func TestInstallKilledDuringDeployThenRerun(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	reg.Push(t, manyFilesImage(t, 6000), "os:many", "gzip")
	ref := reg.Ref("os:many")
	args := h.installArgs(ref, "--experimental-unified-storage", "--copy-mode", "copy")

	cmd := h.command(t.Context(), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for len(h.leftovers()) == 0 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the deployment never started")
		}
		time.Sleep(2 * time.Millisecond)
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	if len(h.leftovers()) == 0 {
		t.Fatal("the kill came too late to leave a partial deployment")
	}
	t.Logf("the killed install left %v", h.leftovers())

	h.ok(args...)
	if left := h.leftovers(); len(left) != 0 {
		t.Errorf("the rerun did not remove the leftovers: %v", left)
	}
	if deps := h.deployments("default"); len(deps) != 1 {
		t.Errorf("want one deployment after the rerun, got %v", deps)
	}
	if n := countFiles(t, filepath.Join(h.root, "ostree/deploy/default/deploy", h.deployments("default")[0], "usr/share/many")); n != 6000 {
		t.Errorf("the deployment has %d of 6000 files", n)
	}
}

func countFiles(t *testing.T, dir string) int {
	n := 0
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n++
		}
		return nil
	})
	return n
}
