package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/tests/harness"
)

func usedBytes(t *testing.T, path string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks-st.Bfree) * int64(st.Bsize)
}

// A split host onboarded with `image set-unified` ends with one copy of its
// OS on disk, says unified, and upgrades by the unified path.
func TestSetUnifiedOnboardsSplitHost(t *testing.T) {
	mnt := harness.LoopFS(t, 1<<30, harness.MkfsExt4...)
	h := newHostAt(t, filepath.Join(mnt, "root"))
	reg := harness.StartRegistry(t)
	reg.Push(t, bigOSImage(t, 24<<20), "os:latest", "gzip")
	h.ok(h.installArgs(reg.Ref("os:latest"))...)
	if st := h.status(); st.Status.Booted.Bootstore.Storage != "split" {
		t.Fatalf("install without --experimental-unified-storage should be split")
	}
	split := usedBytes(t, mnt)

	res := h.ok("image", "set-unified", "--tls-verify=false", "--signature-policy", h.policy)
	t.Logf("set-unified: %s", strings.TrimSpace(res.stdout))
	afterPull := usedBytes(t, mnt)
	if st := h.status(); st.Status.Booted.Bootstore.Storage != "unified" {
		t.Errorf("status after set-unified: storage %q", st.Status.Booted.Bootstore.Storage)
	}
	t.Logf("bytes used: split host %d MB, after set-unified %d MB", split>>20, afterPull>>20)
	// The store now holds the image (24 MB of layer) and the deployment
	// shares it: one copy, so usage grows by far less than a second copy.
	if grow := afterPull - split; grow > 8<<20 {
		t.Errorf("onboarding grew usage by %d MB: the deployment still keeps its own copy", grow>>20)
	}
	shared, _ := checkSharing(t, h, reg.Ref("os:latest"), func(dep, store string) bool {
		var a, b unix.Stat_t
		return unix.Stat(dep, &a) == nil && unix.Stat(store, &b) == nil && a.Ino == b.Ino
	})
	if shared == 0 {
		t.Errorf("no deployment file shares the store's inode after set-unified")
	}

	reg.Push(t, osVersion(t, "2", nil, harness.Layer{etcFile("x", "2\n")}), "os:latest", "gzip")
	h.ok("upgrade", "--tls-verify=false", "--signature-policy", h.policy)
	if st := h.status(); st.Status.Staged == nil || st.Status.Staged.Bootstore.Storage != "unified" {
		t.Errorf("the upgrade after set-unified did not take the unified path: %+v", st.Status.Staged)
	}
}
