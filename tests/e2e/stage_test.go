package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootstore/bootstore/tests/harness"
)

// --download-only stages a deployment that finalization leaves alone until
// --from-downloaded releases it.
func TestDownloadOnlyWaitsForRelease(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	reg.Push(t, osVersion(t, "1", nil, harness.Layer{etcFile("x", "1\n")}), "os:latest", "gzip")
	h.ok(h.installArgs(reg.Ref("os:latest"), "--experimental-unified-storage")...)
	reg.Push(t, osVersion(t, "2", nil, harness.Layer{etcFile("x", "2\n")}), "os:latest", "gzip")

	h.ok("upgrade", "--download-only", "--tls-verify=false", "--signature-policy", h.policy)
	if st := h.status(); st.Status.Staged == nil || !st.Status.Staged.DownloadOnly {
		t.Fatalf("status should show a download-only staged deployment: %+v", st.Status.Staged)
	}
	if out := h.ok("internals", "finalize-staged").stdout; !strings.Contains(out, "download-only") {
		t.Errorf("finalize-staged should skip a download-only deployment:\n%s", out)
	}
	h.ok("internals", "simulate-reboot")
	if st := h.status(); versionOf(st, "booted") != "1" || st.Status.Staged == nil {
		t.Fatalf("a download-only deployment was finalized: booted %s", versionOf(st, "booted"))
	}
	h.ok("upgrade", "--from-downloaded")
	if st := h.status(); st.Status.Staged == nil || st.Status.Staged.DownloadOnly {
		t.Fatalf("--from-downloaded did not release the staged deployment")
	}
	h.ok("internals", "finalize-staged")
	h.ok("internals", "simulate-reboot")
	if st := h.status(); versionOf(st, "booted") != "2" {
		t.Errorf("after release and reboot: booted %s", versionOf(st, "booted"))
	}
	// Nothing to release any more.
	h.expectFailure(1, []string{"download-only"}, "upgrade", "--from-downloaded")
}

// switch stages another image; an image with the booted content is refused,
// also under another name or transport.
func TestSwitchAndRefuseSameContent(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	v1 := osVersion(t, "1", nil, harness.Layer{etcFile("x", "1\n")})
	reg.Push(t, v1, "os:latest", "gzip")
	reg.Push(t, v1, "mirror/os:same", "gzip")
	h.ok(h.installArgs(reg.Ref("os:latest"), "--experimental-unified-storage")...)

	h.expectFailure(8, []string{"booted"}, "switch", "--tls-verify=false", "--signature-policy", h.policy, reg.Ref("mirror/os:same"))
	if st := h.status(); st.Status.Staged != nil {
		t.Errorf("a refused switch staged %+v", st.Status.Staged)
	}

	layout := filepath.Join(t.TempDir(), "other")
	other := osVersion(t, "other", nil, harness.Layer{etcFile("x", "other\n")})
	if err := other.WriteOCILayout(layout, "v1"); err != nil {
		t.Fatal(err)
	}
	h.ok("switch", "--transport", "oci", "--signature-policy", h.policy, layout+":v1")
	st := h.status()
	if versionOf(st, "staged") != "other" {
		t.Fatalf("switch to an OCI layout did not stage it: %+v", st.Status.Staged)
	}
	if img := st.Status.Staged.Image.Image.Image; img != layout+":v1" {
		t.Errorf("staged image reference %q", img)
	}
	h.ok("switch", "--transport", "oci", "--signature-policy", h.policy, "--apply", layout+":v1")
	if st := h.status(); versionOf(st, "booted") != "other" {
		t.Errorf("switch --apply under --sysroot should finalize and boot: booted %s", versionOf(st, "booted"))
	}
	if _, err := os.Stat(filepath.Join(h.root, "ostree/bootc/bootstore/staged.json")); err == nil {
		t.Errorf("staged record left after --apply")
	}
}
