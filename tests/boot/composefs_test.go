package boot

import (
	"strings"
	"testing"
	"time"
)

// testComposefs boots a host installed with --composefs: the initramfs's
// bootstore-prepare-root (contrib/dracut) mounts the deployment's EROFS
// image over the unified store's layer files, and everything a tree
// deployment does still holds: bound images run, the timer's upgrade
// stages v2 as composefs too, /etc is merged, and the reboot lands on v2.
func testComposefs(t *testing.T, disk, updates string) {
	v := startVM(t, disk, updates)
	took := bootToMultiUser(t, v)
	t.Logf("FIGURE composefs first boot: QEMU start to multi-user (no failed units): %s", took.Round(100*time.Millisecond))
	checkBooted(t, v, "v1")
	checkComposefsRoot(t, v)
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
	if got := strings.Fields(v.run("findmnt -n -o FSTYPE,SOURCE /", time.Minute)); len(got) != 2 || got[0] != "overlay" || got[1] != "composefs" {
		t.Errorf("/ is %v, want the overlay named composefs", got)
	}
	opts := v.run("findmnt -n -o OPTIONS /", time.Minute)
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
