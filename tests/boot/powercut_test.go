package boot

import (
	"os"
	"strings"
	"testing"
	"time"
)

// testPowerCut pulls the power (SIGKILL of QEMU) while the timer's unit
// stages v2, and while the staged deployment is finalized at shutdown, three
// times each; every next boot must come up on a complete deployment with no
// failed units, and the upgrade after the cuts must succeed.
func testPowerCut(t *testing.T, disk, updates string) {
	v := startVM(t, disk, updates)
	bootToMultiUser(t, v)
	checkBooted(t, v, "v1")

	// Staging: early in the pull, while the deployment tree is written,
	// and right after the staged record is written (before the reboot).
	stagingPoints := []struct {
		name, until string
	}{
		{"pulling", "sleep 1"},
		{"writing the deployment", "until ls -d /ostree/deploy/default/deploy/.staging-* >/dev/null 2>&1; do sleep 0.2; done"},
		{"staged, before the reboot", "until test -e /ostree/bootc/bootstore/staged.json; do sleep 0.1; done"},
	}
	for _, p := range stagingPoints {
		v.exec("systemctl start --no-block bootstore-fetch-apply-updates.service", 30*time.Second)
		if _, _, ok := v.exec(p.until, 10*time.Minute); !ok {
			t.Fatalf("power cut while %s: the guest never got there", p.name)
		}
		v.kill()
		t.Logf("power cut while staging (%s)", p.name)
		v = startVM(t, disk, updates)
		bootToMultiUser(t, v)
		checkBooted(t, v, "v1")
	}

	// Finalization: stage without rebooting, then cut the power at
	// increasing delays after systemd starts stopping the finalize unit.
	booted := "v1"
	for _, delay := range []time.Duration{0, 400 * time.Millisecond, 1500 * time.Millisecond} {
		if booted != "v1" {
			v.run("bootstore rollback", 2*time.Minute)
			boot := v.bootID(t)
			v.exec("systemctl reboot", 5*time.Second)
			v.waitReboot(t, boot)
			checkBooted(t, v, "v1")
		}
		v.run("bootstore upgrade --quiet", 15*time.Minute)
		v.run("systemctl is-active bootstore-finalize-staged.service", time.Minute)
		mark := consoleSize(v)
		v.exec("systemctl reboot", 2*time.Second)
		if !v.waitConsole(mark, "Finalize Staged Deployment...", 5*time.Minute) {
			t.Fatalf("the shutdown never stopped bootstore-finalize-staged.service:\n%s", v.consoleTail(4000))
		}
		time.Sleep(delay)
		v.kill()
		v = startVM(t, disk, updates)
		bootToMultiUser(t, v)
		booted = strings.TrimSpace(v.run("cat /usr/share/bootstore-test/version", time.Minute))
		t.Logf("power cut %s into the finalization: came up on %s", delay, booted)
		checkBooted(t, v, booted)
	}

	// The next upgrade succeeds.
	if booted != "v1" {
		v.run("bootstore rollback", 2*time.Minute)
		boot := v.bootID(t)
		v.exec("systemctl reboot", 5*time.Second)
		v.waitReboot(t, boot)
	}
	v.upgradeAndReboot(t)
	checkBooted(t, v, "v2")
}

func consoleSize(v *vm) int64 {
	fi, err := os.Stat(v.console)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// waitConsole waits until text appears in the console log after offset.
func (v *vm) waitConsole(offset int64, text string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(v.console)
		if int64(len(data)) > offset && strings.Contains(string(data[offset:]), text) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}
