package boot

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bootstore/bootstore/pkg/status/statustest"
	"github.com/bootstore/bootstore/tests/harness"
)

// testbed is the host side of a boot test: the registry with the test OS
// and its bound images, reachable as localhost:5000.
type testbed struct {
	t      *testing.T
	rootfs string
	reg    *harness.Registry
	policy string
	dir    string
}

func newTestbed(t *testing.T) *testbed {
	t.Helper()
	if os.Getenv(gateEnv) != "1" {
		t.Skip("the boot suite is slow: run it with make boot-test (" + gateEnv + "=1)")
	}
	harness.RequireRoot(t)
	for _, c := range []string{"qemu-system-x86_64", "sgdisk", "mkfs.xfs", "mkfs.vfat", "mke2fs", "grub-mkimage", "losetup"} {
		harness.RequireCommand(t, c)
	}
	if os.Getenv(netnsEnv) == "" {
		t.Skip("needs its own network namespace (unshare) to serve localhost:5000")
	}
	tb := &testbed{t: t, rootfs: debianRootfs(t), reg: harness.StartRegistry(t), policy: harness.PolicyFile(t), dir: t.TempDir()}
	tb.serveLocalhost5000()
	for _, name := range boundNames {
		tb.reg.Push(t, harness.AppImage(t, name), "bootstore-test/"+name+":v1", "zstd:chunked")
	}
	return tb
}

// serveLocalhost5000 forwards localhost:5000 (in the test's network
// namespace) to the harness's registry, so the host installs from the
// references the guest later resolves against its own registry.
func (tb *testbed) serveLocalhost5000() {
	ln, err := net.Listen("tcp", "127.0.0.1:5000")
	if err != nil {
		tb.t.Fatalf("listening on localhost:5000: %v", err)
	}
	target, _ := url.Parse("http://" + tb.reg.DirectAddr)
	srv := &http.Server{Handler: httputil.NewSingleHostReverseProxy(target)}
	go srv.Serve(ln)
	tb.t.Cleanup(func() { srv.Close() })
}

// pushOS builds the test OS at version and pushes it as osRef.
func (tb *testbed) pushOS(version string) {
	tb.t.Helper()
	start := time.Now()
	tb.reg.Push(tb.t, osImage(tb.t, tb.rootfs, version), "bootstore-test/os:latest", "zstd:chunked")
	tb.t.Logf("pushed %s as %s (zstd:chunked) in %s", version, osRef, time.Since(start).Round(time.Second))
}

// bootstore runs the bootstore binary on the test host.
func (tb *testbed) bootstore(args ...string) string {
	tb.t.Helper()
	// install to-disk took 10-40 s.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bootstoreBin, args...).CombinedOutput()
	if err != nil {
		tb.t.Fatalf("bootstore %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// installDisk installs the test OS (osRef) on a new sparse disk image.
func (tb *testbed) installDisk(name string, extra ...string) string {
	tb.t.Helper()
	disk := filepath.Join(tb.dir, name+".img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		tb.t.Fatal(err)
	}
	if err := os.Truncate(disk, 8<<30); err != nil {
		tb.t.Fatal(err)
	}
	start := time.Now()
	args := append([]string{"install", "to-disk", "--via-loopback", "--tls-verify=false", "--signature-policy", tb.policy,
		"--source-imgref", "docker://" + osRef}, extra...)
	out := tb.bootstore(append(args, disk)...)
	tb.t.Logf("bootstore install to-disk in %s:\n%s", time.Since(start).Round(time.Second), out)
	tb.keepOnFailure(disk)
	return disk
}

// updatesDisk writes the registry's storage as it is now to an ext4 image
// labelled "updates", which the guest serves on its localhost:5000.
func (tb *testbed) updatesDisk(name string) string {
	tb.t.Helper()
	img := filepath.Join(tb.dir, name+".img")
	// Test binaries the guests run against their own kernel go beside the
	// registry's tree, which docker-registry ignores.
	buildGuestTests(tb.t, filepath.Join(tb.reg.StorageDir, "bootstore-tests"))
	out, err := exec.Command("du", "-sb", tb.reg.StorageDir).Output()
	if err != nil {
		tb.t.Fatal(err)
	}
	size, err := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	if err != nil {
		tb.t.Fatal(err)
	}
	size = size*5/4 + 64<<20
	os.Remove(img)
	f, err := os.Create(img)
	if err != nil {
		tb.t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	if out, err := exec.Command("mke2fs", "-q", "-t", "ext4", "-L", "updates", "-d", tb.reg.StorageDir, img).CombinedOutput(); err != nil {
		tb.t.Fatalf("mke2fs: %v: %s", err, out)
	}
	tb.keepOnFailure(img)
	return img
}

// bootToMultiUser waits for the guest to finish booting, with no failed
// units, and returns the time from QEMU's start.
func bootToMultiUser(t *testing.T, v *vm) time.Duration {
	t.Helper()
	v.waitShell(6 * time.Minute)
	out, code, ok := v.exec("systemctl is-system-running --wait", 5*time.Minute)
	took := time.Since(v.started)
	if !ok || code != 0 {
		failed, _, _ := v.exec("systemctl --failed --no-pager; journalctl -b --no-pager -p warning | tail -50", time.Minute)
		t.Fatalf("system state %q (answered: %v), failed units:\n%s", strings.TrimSpace(out), ok, failed)
	}
	return took
}

// guestStatus returns bootstore status --format json, validated against
// the status schema.
func guestStatus(t *testing.T, v *vm) map[string]any {
	t.Helper()
	out := v.run("bootstore status --format json", 2*time.Minute)
	statustest.ValidateHost(t, []byte(out))
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	return st
}

// field walks nested JSON objects.
func field(m any, path ...string) any {
	for _, p := range path {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[p]
	}
	return m
}

// TestBoot installs v1 of the test OS to disks, then publishes v2 (both as
// osRef) and boots each disk in QEMU with the registry's storage on a
// second disk: Lifecycle upgrades, rolls back and collects garbage;
// Composefs does the same on a host installed with --composefs; PowerCut
// pulls the power while staging and finalizing.
func TestBoot(t *testing.T) {
	tb := newTestbed(t)
	tb.pushOS("v1")
	lifecycleDisk := tb.installDisk("lifecycle", "--experimental-unified-storage")
	composefsDisk := tb.installDisk("composefs", "--experimental-unified-storage", "--composefs")
	// The power cuts take about 10 minutes; BOOTSTORE_BOOT_POWERCUT=0
	// leaves them out of a run.
	powerCut := os.Getenv("BOOTSTORE_BOOT_POWERCUT") != "0"
	var powerCutDisk string
	if powerCut {
		powerCutDisk = tb.installDisk("powercut", "--experimental-unified-storage")
	}
	tb.pushOS("v2")
	updates := tb.updatesDisk("updates")
	// Each subtest runs again on a guest fault (retry_test.go).
	t.Run("Lifecycle", func(t *testing.T) {
		retryOnGuestFault(t, lifecycleDisk, func(a *attempt) { testLifecycle(t, a, lifecycleDisk, updates) })
	})
	t.Run("Composefs", func(t *testing.T) {
		retryOnGuestFault(t, composefsDisk, func(a *attempt) { testComposefs(t, a, composefsDisk, updates) })
	})
	t.Run("PowerCut", func(t *testing.T) {
		if !powerCut {
			t.Skip("left out: BOOTSTORE_BOOT_POWERCUT=0")
		}
		retryOnGuestFault(t, powerCutDisk, func(a *attempt) { testPowerCut(t, a, powerCutDisk, updates) })
	})
}

// testLifecycle boots v1, upgrades to v2 through the timer's unit from the
// registry on the update disk, rolls back, and collects garbage, checking
// from inside the guest after every boot.
func testLifecycle(t *testing.T, a *attempt, disk, updates string) {
	v := a.startVM(disk, updates)
	took := bootToMultiUser(t, v)
	t.Logf("FIGURE first boot: QEMU start to multi-user (no failed units): %s", took.Round(100*time.Millisecond))
	checkBooted(t, v, "v1")
	// A bound image runs from the unified store, with no pull (and no
	// network to pull from).
	runBoundImages(t, v)

	// The timer's unit stages v2 and reboots (upgrade --apply); the
	// shutdown finalizes it.
	v.run("echo kept > /etc/bootstore-test-admin.conf", time.Minute)
	v.upgradeAndReboot(t)
	checkBooted(t, v, "v2")
	v.run("grep -qx kept /etc/bootstore-test-admin.conf", time.Minute)
	v.run("grep -qx 'added in v2' /etc/bootstore-test/new-default.conf", time.Minute)
	st := guestStatus(t, v)
	if got := field(st, "status", "rollback", "image", "version"); got != "v1" {
		t.Errorf("rollback deployment's version %v, want v1", got)
	}
	stageTime, finalizeTime := v.lastBootTimings(t)
	t.Logf("FIGURE upgrade staged by bootstore-fetch-apply-updates.service in %s", stageTime)
	t.Logf("FIGURE finalization at shutdown (bootstore-finalize-staged.service stop) took %s", finalizeTime)

	// Rollback, reboot: v1 again, and gc keeps both deployments.
	boot := v.bootID(t)
	v.run("bootstore rollback", 2*time.Minute)
	v.exec("systemctl reboot", 5*time.Second)
	v.waitReboot(t, boot)
	checkBooted(t, v, "v1")
	v.run("bootstore gc", 5*time.Minute)
	st = guestStatus(t, v)
	if got := field(st, "status", "rollback", "image", "version"); got != "v2" {
		t.Errorf("after gc the rollback deployment's version is %v, want v2", got)
	}
	if n := strings.Count(v.run("ls /ostree/deploy/default/deploy", time.Minute), ".origin"); n != 2 {
		t.Errorf("%d deployments after gc, want 2", n)
	}
}

// runBoundImages runs every bound image with podman from the unified
// store, with no pull (and no network to pull from).
func runBoundImages(t *testing.T, v *vm) {
	t.Helper()
	for _, name := range boundNames {
		out := v.run("podman run --rm --network none --pull=never "+boundRef(name)+" cat /usr/share/harness-app/"+name, 3*time.Minute)
		if !strings.Contains(out, "app "+name) {
			t.Errorf("podman run %s: %q", name, out)
		}
	}
}

// checkBooted checks what a user checks after a boot: no failed units,
// the image version, the ostree= boot link, ostree's layout.
func checkBooted(t *testing.T, v *vm, version string) {
	t.Helper()
	if failed := strings.TrimSpace(v.run("systemctl --failed --no-legend --plain", time.Minute)); failed != "" {
		t.Errorf("failed units:\n%s", failed)
	}
	st := guestStatus(t, v)
	if got := field(st, "status", "booted", "image", "image", "image"); got != osRef {
		t.Errorf("booted image %v, want %s", got, osRef)
	}
	if got := field(st, "status", "booted", "image", "version"); got != version {
		t.Errorf("booted version %v, want %s", got, version)
	}
	if got := strings.TrimSpace(v.run("cat /usr/share/bootstore-test/version", time.Minute)); got != version {
		t.Errorf("/usr says version %q, want %s", got, version)
	}
	cmdline := v.run("cat /proc/cmdline", time.Minute)
	if !strings.Contains(cmdline, "ostree=/ostree/boot.0/default/") || !strings.Contains(cmdline, "root=UUID=") {
		t.Errorf("kernel command line %q lacks the ostree= boot link or root=UUID=", cmdline)
	}
	// ostree's layout: the physical root at /sysroot, / the deployment the
	// karg names (for a composefs deployment: its image, mounted over the
	// store; see checkComposefsRoot), /var the stateroot's.
	deployDir := `"$(readlink -f /sysroot$(sed -n 's/.*ostree=\([^ ]*\).*/\1/p' /proc/cmdline))"`
	if _, code, _ := v.exec("test -f "+deployDir+"/.bootstore.cfs", time.Minute); code != 0 {
		v.run(`test "$(stat -c %d:%i /)" = "$(stat -c %d:%i `+deployDir+`)"`, time.Minute)
	}
	if src := v.run("findmnt -n -o SOURCE /var", time.Minute); !strings.Contains(src, "/ostree/deploy/default/var") {
		t.Errorf("/var is mounted from %q, want the stateroot's /ostree/deploy/default/var", src)
	}
	v.run("test -d /sysroot/ostree/bootc/storage/overlay && test -L /ostree", time.Minute)
	if got := v.run("findmnt -n -o FSTYPE /boot", time.Minute); !strings.Contains(got, "ext4") {
		t.Errorf("/boot: %q", got)
	}
}

// keepOnFailure copies the disk image p (sparse) into $BOOTSTORE_BOOT_KEEP
// when the test fails, to boot it by hand.
func (tb *testbed) keepOnFailure(p string) {
	dir := os.Getenv("BOOTSTORE_BOOT_KEEP")
	if dir == "" {
		return
	}
	tb.t.Cleanup(func() {
		if !tb.t.Failed() {
			return
		}
		os.MkdirAll(dir, 0o755)
		exec.Command("cp", "--sparse=always", p, dir).Run()
		tb.t.Logf("kept %s in %s", filepath.Base(p), dir)
	})
}
