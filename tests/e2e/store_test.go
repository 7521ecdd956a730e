package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/tests/harness"
)

// A store whose filesystem cannot host overlay (here: ext4 formatted
// without d_type, which overlayfs refuses) falls back to vfs loudly, records
// the choice once, and still serves podman.
func TestStoreFallsBackToVFSLoudly(t *testing.T) {
	// ext4 without d_type: overlayfs refuses it.
	h := newHostAt(t, filepath.Join(harness.LoopFS(t, 256<<20, harness.MkfsExt4NoDType...), "root"))
	reg := harness.StartRegistry(t)
	reg.Push(t, harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "1"}), "os:v1", "gzip")

	res := h.ok(h.pullArgs(reg.Ref("os:v1"))...)
	if !strings.Contains(res.stderr, "falling back to vfs") || !strings.Contains(res.stderr, "partial pulls") {
		t.Errorf("the vfs fallback was not announced:\n%s", res.stderr)
	}
	var rec struct{ Driver string }
	readJSONFile(t, filepath.Join(h.storageRoot(), "bootstore.json"), &rec)
	if rec.Driver != "vfs" {
		t.Fatalf("bootstore.json records driver %q, want vfs", rec.Driver)
	}
	// Decided once: later commands neither probe nor warn again.
	if res := h.ok(h.pullArgs(reg.Ref("os:v1"))...); strings.Contains(res.stderr, "WARNING") {
		t.Errorf("the second command warned again:\n%s", res.stderr)
	}
	podman := harness.PodmanOn(t, h.storageRoot(), "vfs")
	if out, err := podman.Run(t, "images", "--format", "{{.Repository}}:{{.Tag}}"); err != nil || !strings.Contains(out, reg.Ref("os:v1")) {
		t.Errorf("podman --storage-driver vfs images: %v\n%s", err, out)
	}
}

// The store appears whole or not at all, and on overlay where it can.
func TestStoreIsCreatedWithOverlayAndRecorded(t *testing.T) {
	h := newHost(t)
	h.ok(h.pullArgs("--bound-images", "skip", "oci:"+writeLayout(t))...)
	var rec map[string]any
	readJSONFile(t, filepath.Join(h.storageRoot(), "bootstore.json"), &rec)
	if rec["driver"] != "overlay" {
		t.Errorf("bootstore.json: %v, want driver overlay", rec)
	}
	entries, _ := os.ReadDir(filepath.Dir(h.storageRoot()))
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("store creation left %s behind", e.Name())
		}
	}
	if data, err := json.Marshal(rec); err != nil || len(data) == 0 {
		t.Fatal(err)
	}
}

// One mutating command at a time: a second one fails at once, naming the
// lock; readers are not blocked.
func TestSecondWriterIsRefusedReadersAreNot(t *testing.T) {
	h := newHost(t)
	h.ok(h.pullArgs("oci:" + writeLayout(t))...)
	lock, err := os.OpenFile(filepath.Join(h.root, "ostree/bootc/bootstore/lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	h.expectFailure(5, []string{"another bootstore command", "lock"}, h.pullArgs("oci:"+writeLayout(t))...)
	if infos := h.list(); len(infos) != 1 {
		t.Errorf("image list under a held lock: %+v", infos)
	}
}

func writeLayout(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "os")
	if err := harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "1"}).WriteOCILayout(dir, "v1"); err != nil {
		t.Fatal(err)
	}
	return dir + ":v1"
}
