package boot

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testComposefs boots a host installed with --composefs: the initramfs's
// bootstore-prepare-root (contrib/dracut) mounts the deployment's EROFS
// image over the unified store's layer files, and everything a tree
// deployment does still holds: bound images run, the timer's upgrade
// stages v2 as composefs too, /etc is merged, and the reboot lands on v2.
func testComposefs(t *testing.T, a *attempt, disk, updates string) {
	v := a.startVM(disk, updates)
	took := bootToMultiUser(t, v)
	t.Logf("FIGURE composefs first boot: QEMU start to multi-user (no failed units): %s", took.Round(100*time.Millisecond))
	checkBooted(t, v, "v1")
	checkComposefsRoot(t, v)
	checkVerityInGuest(t, v)
	runBoundImages(t, v)
	v.run("echo kept > /etc/bootstore-test-admin.conf", time.Minute)
	v.upgradeAndReboot(t)
	checkBooted(t, v, "v2")
	checkComposefsRoot(t, v)
	v.run("grep -qx kept /etc/bootstore-test-admin.conf", time.Minute)
	v.run("grep -qx 'added in v2' /etc/bootstore-test/new-default.conf", time.Minute)
	st := guestStatus(t, v)
	if got := field(st, "status", "rollback", "image", "version"); got != "v1" {
		t.Errorf("rollback deployment's version %v, want v1", got)
	}
	if got, _ := field(st, "status", "rollback", "bootstore", "composefs").(string); !strings.HasPrefix(got, "sha256:") {
		t.Errorf("the rollback deployment is not composefs in status: %v", field(st, "status", "rollback", "bootstore"))
	}
}

// checkComposefsRoot checks that / is the booted deployment's composefs
// image: an overlay whose metadata layer is the image and whose data
// layer is the unified store, /usr read-only, the deployment directory
// holding no OS files, status naming the image's digest.
func checkComposefsRoot(t *testing.T, v *vm) {
	t.Helper()
	if got := strings.Fields(v.run("findmnt -n -o FSTYPE,SOURCE / | cat", time.Minute)); len(got) != 2 || got[0] != "overlay" || got[1] != "composefs" {
		t.Errorf("/ is %v, want the overlay named composefs", got)
	}
	// Through cat: findmnt cuts its columns to a terminal's width.
	opts := v.run("findmnt -n -o OPTIONS / | cat", time.Minute)
	for _, want := range []string{"lowerdir=/run/bootstore/composefs/meta::/sysroot/ostree/bootc/storage/overlay", "metacopy=on", "redirect_dir=on"} {
		if !strings.Contains(opts, want) {
			t.Errorf("/ is mounted with %q, lacking %q", strings.TrimSpace(opts), want)
		}
	}
	if _, code, _ := v.exec("touch /usr/bootstore-test-write", time.Minute); code == 0 {
		t.Errorf("/usr is writable on a composefs deployment")
	}
	deployDir := `"$(readlink -f /sysroot$(sed -n 's/.*ostree=\([^ ]*\).*/\1/p' /proc/cmdline))"`
	if got := strings.Fields(v.run("ls -A "+deployDir, time.Minute)); strings.Join(got, " ") != ".bootstore.cfs etc" {
		t.Errorf("the deployment directory holds %v, want only .bootstore.cfs and etc", got)
	}
	st := guestStatus(t, v)
	digest, _ := field(st, "status", "booted", "bootstore", "composefs").(string)
	if !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("status does not show the booted deployment as composefs: %v", field(st, "status", "booted", "bootstore"))
	}
	if got := strings.Fields(v.run("sha256sum "+deployDir+"/.bootstore.cfs", time.Minute)); len(got) == 0 || "sha256:"+got[0] != digest {
		t.Errorf("the composefs image's digest is %v, status says %s", got, digest)
	}
}

// buildGuestTests compiles the test binaries a guest runs against its own
// kernel into dir: pkg/composefs's, whose fs-verity test skips on build
// hosts without CONFIG_FS_VERITY (the guest's 6.12 kernel has it).
func buildGuestTests(t *testing.T, dir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-c", "-buildvcs=false",
		"-tags", "containers_image_openpgp,exclude_graphdriver_btrfs",
		"-o", filepath.Join(dir, "composefs.test"), "github.com/bootstore/bootstore/pkg/composefs")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building pkg/composefs's tests for the guest: %v\n%s", err, out)
	}
}

// checkVerityInGuest proves fs-verity on the guest's kernel. First
// pkg/composefs's own test, which replaces store files behind a mounted
// image's back. Then the product path: bootstore install to-filesystem
// --composefs --verity onto an ext4 file system with fs-verity, the
// deployment's image mounted with verity=require as bootstore-prepare-root
// mounts it, a store file replaced: reading it must fail with EIO, while
// the files left alone read as the booted system's.
func checkVerityInGuest(t *testing.T, v *vm) {
	t.Helper()
	out := v.run("cd /tmp && /var/updates/bootstore-tests/composefs.test -test.run '^TestVerityRefusesAChangedStoreFile$' -test.v -test.count=1", 5*time.Minute)
	if !strings.Contains(out, "--- PASS: TestVerityRefusesAChangedStoreFile") {
		t.Fatalf("pkg/composefs's verity test in the guest did not pass:\n%s", out)
	}

	v.run("truncate -s 4G /var/tmp/verity.img && mkfs.ext4 -q -F -b 4096 -O verity /var/tmp/verity.img && "+
		"mkdir -p /mnt/verity && mount -o loop /var/tmp/verity.img /mnt/verity", 2*time.Minute)
	start := time.Now()
	v.run("bootstore install to-filesystem --experimental-unified-storage --composefs --verity --source-imgref "+osRef+" /mnt/verity", 12*time.Minute)
	t.Logf("FIGURE in the guest: install to-filesystem --composefs --verity onto ext4 (fs-verity on every store file): %s", time.Since(start).Round(100*time.Millisecond))
	deploy := "$(ls -d /mnt/verity/ostree/deploy/default/deploy/*.0)"
	v.run("grep -qx 'composefs-verity=true' "+deploy+".origin", time.Minute)
	v.run("mkdir -p /run/vt/meta /run/vt/root && loop=$(losetup -f --show -r "+deploy+"/.bootstore.cfs) && "+
		"mount -t erofs -o ro $loop /run/vt/meta && "+
		"mount -t overlay -o ro,metacopy=on,redirect_dir=on,verity=require,lowerdir=/run/vt/meta::/mnt/verity/ostree/bootc/storage/overlay composefs /run/vt/root", 2*time.Minute)
	defer v.exec("umount /run/vt/root /run/vt/meta; losetup -D; umount /mnt/verity; rm -f /var/tmp/verity.img", time.Minute)
	// bash is not read before it is replaced: overlayfs verifies a data
	// file once, when it first opens it, and keeps it while cached.
	for _, f := range []string{"/usr/bin/ls", "/usr/lib/os-release"} {
		if got, want := v.run("sha256sum </run/vt/root"+f, time.Minute), v.run("sha256sum <"+f, time.Minute); got != want {
			t.Errorf("%s through the verity mount: %s, the booted system's: %s", f, got, want)
		}
	}
	// The store's bash: one base layer holds it. A copy has no fs-verity
	// and another digest.
	v.run(`f=$(ls /mnt/verity/ostree/bootc/storage/overlay/*/diff/usr/bin/bash) && [ $(echo "$f" | wc -l) = 1 ] && `+
		`cp "$f" "$f.new" && echo tampered >>"$f.new" && mv -f "$f.new" "$f"`, time.Minute)
	if out, code, _ := v.exec("cat /run/vt/root/usr/bin/bash >/dev/null", time.Minute); code == 0 || !strings.Contains(out, "Input/output error") {
		t.Errorf("reading /usr/bin/bash after its store file was replaced: exit %d, %q; want an I/O error", code, strings.TrimSpace(out))
	}
	if got, want := v.run("sha256sum </run/vt/root/usr/bin/ls", time.Minute), v.run("sha256sum </usr/bin/ls", time.Minute); got != want {
		t.Errorf("an untouched file no longer reads alike: %s, want %s", got, want)
	}
}
