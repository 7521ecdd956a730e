package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
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

// readView reads p in the mounted composefs deployment dep.
func readView(t *testing.T, h *host, dep, p string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(composefsView(t, h, dep), p))
	if err != nil {
		t.Fatalf("reading %s in the composefs deployment %s: %v", p, filepath.Base(dep), err)
	}
	return string(data)
}

// TestComposefsUpgradeMergeGC upgrades a composefs host twice: each staged
// deployment is composefs again, finalizing merges the admin's /etc changes
// read through the booted image, gc keeps the layers the kept deployments'
// images redirect into and removes the dropped one's, and set-unified has
// nothing to share.
func TestComposefsUpgradeMergeGC(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	push := func(version string) {
		reg.Push(t, osVersion(t, version, nil, harness.Layer{
			{Path: "/usr/share/os/version", Type: harness.File, Data: []byte("v" + version + "\n")},
			etcFile("admin-changed", "a"+version+"\n"), etcFile("untouched", "u"+version+"\n"),
		}), "os:latest", "gzip")
	}
	push("1")
	h.ok(h.installArgs(reg.Ref("os:latest"), "--experimental-unified-storage", "--composefs")...)
	v1 := h.status().Status.Booted.Bootstore.Deployment
	v1Top := h.layerDirs(reg.Ref("os:latest"))[0] // v1's own files, top first
	writeFile(t, filepath.Join(h.deploymentDir(v1), "etc", "admin-changed"), "admin\n")
	if out := h.ok("image", "set-unified", "--tls-verify=false", "--signature-policy", h.policy).stdout; !strings.Contains(out, "0 files now share data") {
		t.Errorf("set-unified on a composefs host should have nothing to do:\n%s", out)
	}

	upgrade := func(version string) (booted, rollback string) {
		push(version)
		h.ok("upgrade", "--tls-verify=false", "--signature-policy", h.policy)
		staged := h.status().Status.Staged.Bootstore.Deployment
		if originValue(t, h.deploymentDir(staged), "composefs") == "" {
			t.Fatalf("the deployment staged by upgrade to v%s is not composefs", version)
		}
		h.ok("internals", "finalize-staged")
		h.ok("internals", "simulate-reboot")
		h.ok("gc")
		st := h.status()
		return st.Status.Booted.Bootstore.Deployment, st.Status.Rollback.Bootstore.Deployment
	}
	v2, rb := upgrade("2")
	if rb != v1 {
		t.Fatalf("rollback is %s, want %s", rb, v1)
	}
	for name, want := range map[string]string{"admin-changed": "admin\n", "untouched": "u2\n"} {
		if data, err := os.ReadFile(filepath.Join(h.deploymentDir(v2), "etc", name)); err != nil || string(data) != want {
			t.Errorf("/etc/%s after the merge: %q, %v; want %q", name, data, err, want)
		}
	}
	// Both kept deployments read through their images after gc.
	if got := readView(t, h, h.deploymentDir(v1), "usr/share/os/version"); got != "v1\n" {
		t.Errorf("v1 after gc reads %q", got)
	}
	if got := readView(t, h, h.deploymentDir(v2), "usr/share/os/version"); got != "v2\n" {
		t.Errorf("v2 after gc reads %q", got)
	}

	// A third upgrade drops v1: gc removes the layers only v1 redirected
	// into, and keeps the others.
	v3, rb := upgrade("3")
	if rb != v2 {
		t.Fatalf("rollback is %s, want %s", rb, v2)
	}
	if got := readView(t, h, h.deploymentDir(v3), "usr/share/os/version"); got != "v3\n" {
		t.Errorf("v3 reads %q", got)
	}
	if got := readView(t, h, h.deploymentDir(v2), "usr/share/os/version"); got != "v2\n" {
		t.Errorf("v2 after the second gc reads %q", got)
	}
	if _, err := os.Stat(v1Top); err == nil {
		t.Errorf("gc kept %s, the layer only the dropped v1 used", v1Top)
	}
}

// TestComposefsVerityWithoutSupportFailsCleanly installs with --verity on a
// filesystem without fs-verity: the install fails naming fs-verity and
// leaves no deployment and no boot entry.
func TestComposefsVerityWithoutSupportFailsCleanly(t *testing.T) {
	h := newHost(t)
	probe := filepath.Join(h.root, "verity-probe")
	writeFile(t, probe, "probe")
	err := composefs.EnableVerity(probe)
	os.Remove(probe)
	if err == nil {
		t.Skip("this filesystem supports fs-verity")
	}
	reg := harness.StartRegistry(t)
	reg.Push(t, osVersion(t, "1", nil, harness.Layer{etcFile("motd", "hi\n")}), "os:verity", "gzip")
	h.expectFailure(1, []string{"fs-verity"}, h.installArgs(reg.Ref("os:verity"), "--experimental-unified-storage", "--composefs", "--verity")...)
	if deps := h.deployments("default"); len(deps) != 0 {
		t.Errorf("the failed install left deployments: %v", deps)
	}
	if entries, _ := filepath.Glob(filepath.Join(h.root, "boot/loader/entries/*.conf")); len(entries) != 0 {
		t.Errorf("the failed install left boot entries: %v", entries)
	}
	h.expectFailure(2, []string{"--verity needs --composefs"}, h.installArgs(reg.Ref("os:verity"), "--experimental-unified-storage", "--verity")...)
	h.expectFailure(2, []string{"--composefs needs --experimental-unified-storage"}, h.installArgs(reg.Ref("os:verity"), "--composefs")...)

	// install to-disk refuses --verity on xfs (the default) before it
	// touches the disk.
	disk := filepath.Join(t.TempDir(), "disk.img")
	writeFile(t, disk, "")
	if err := os.Truncate(disk, 8<<30); err != nil {
		t.Fatal(err)
	}
	h.expectFailure(1, []string{"xfs has no fs-verity", "--filesystem ext4 or btrfs"}, "install", "to-disk", "--via-loopback",
		"--tls-verify=false", "--signature-policy", h.policy, "--source-imgref", reg.Ref("os:verity"),
		"--experimental-unified-storage", "--composefs", "--verity", disk)
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 1<<20) // the protective MBR and the GPT
	if _, err := io.ReadFull(f, head); err != nil {
		t.Fatal(err)
	}
	if strings.Trim(string(head), "\x00") != "" {
		t.Errorf("the refused install to-disk wrote to %s", disk)
	}
}
