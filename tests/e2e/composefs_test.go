package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/pkg/composefs"
	"github.com/bootstore/bootstore/tests/harness"
)

// composefsView mounts the composefs deployment dep of h as it boots: its
// image over the store's layers, the deployment's own etc/ on /etc. Both
// mounts go at cleanup, also when the test fails.
func composefsView(t *testing.T, h *host, dep string) string {
	t.Helper()
	view := filepath.Join(t.TempDir(), "view")
	if err := os.Mkdir(view, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := composefs.MountOptions{DataRoot: filepath.Join(h.storageRoot(), "overlay")}
	if err := composefs.Mount(filepath.Join(dep, ".bootstore.cfs"), view, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(view, 0); err != nil {
			t.Errorf("unmount %s: %v", view, err)
			unix.Unmount(view, unix.MNT_DETACH)
		}
	})
	etc := filepath.Join(view, "etc")
	if err := unix.Mount(filepath.Join(dep, "etc"), etc, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mounting the deployment's /etc: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(etc, 0); err != nil {
			t.Errorf("unmount %s: %v", etc, err)
			unix.Unmount(etc, unix.MNT_DETACH)
		}
	})
	return view
}

// originValue reads key= of a deployment's origin file.
func originValue(t *testing.T, dep, key string) string {
	t.Helper()
	data, err := os.ReadFile(dep + ".origin")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			return v
		}
	}
	return ""
}

// TestComposefsDeploymentEqualsKernelOverlay installs the oracle image as
// a composefs deployment and compares the mounted deployment, path by path,
// with the kernel's overlayfs view of the store's layers, as
// TestOracleDeploymentEqualsKernelOverlay does for a tree deployment. The
// deployment directory holds only the image and /etc; the origin records
// the image's digest; a second host installing the same image writes the
// same bytes.
func TestComposefsDeploymentEqualsKernelOverlay(t *testing.T) {
	harness.RequireRoot(t)
	reg := harness.StartRegistry(t)
	h, base, sentinel := oracleHost(t, "")
	img := oracleImage(t, sentinel)
	reg.Push(t, img, "oracle:composefs", "gzip")
	ref := reg.Ref("oracle:composefs")
	outside := oracleRecordOutside(t, base, sentinel, "/etc/"+oracleHostPlant)
	out := h.ok(h.installArgs(ref, "--experimental-unified-storage", "--composefs")...)
	t.Logf("install: %s", strings.TrimSpace(out.stdout))
	outside.check(t)

	deps := h.deployments("default")
	if len(deps) != 1 {
		t.Fatalf("want one deployment, got %v", deps)
	}
	dep := filepath.Join(h.root, "ostree/deploy/default/deploy", deps[0])
	entries, err := os.ReadDir(dep)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != ".bootstore.cfs etc" {
		t.Errorf("the composefs deployment should hold its image and /etc only: %q", names)
	}
	image, err := os.ReadFile(filepath.Join(dep, ".bootstore.cfs"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(image)
	if got, want := originValue(t, dep, "composefs"), "sha256:"+hex.EncodeToString(sum[:]); got != want {
		t.Errorf("origin composefs=%q, the image is %s", got, want)
	}

	view := composefsView(t, h, dep)
	oracleCheckView(t, h, ref, view)

	// Same image, same layers: another host writes the same bytes.
	h2 := newHost(t)
	h2.ok(h2.installArgs(ref, "--experimental-unified-storage", "--composefs", "--bound-images", "skip")...)
	deps2 := h2.deployments("default")
	if len(deps2) != 1 {
		t.Fatalf("second host: want one deployment, got %v", deps2)
	}
	if got := originValue(t, filepath.Join(h2.root, "ostree/deploy/default/deploy", deps2[0]), "composefs"); got != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("a second install of the same image wrote composefs=%s, the first sha256:%x", got, sum)
	}
}
