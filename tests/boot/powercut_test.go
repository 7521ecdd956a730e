package boot

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// testPowerCut pulls the power (SIGKILL of QEMU) while the timer's unit
// stages v2, and while the staged deployment is finalized at shutdown, three
// times each; every next boot must come up on a complete deployment with no
// failed units, and the upgrade after the cuts must succeed.
func testPowerCut(t *testing.T, a *attempt, disk, updates string) {
	v := a.startVM(disk, updates)
	bootToMultiUser(t, v)
	checkBooted(t, v, "v1")

	// Staging: early in the pull, while the deployment tree is written,
	// and right after the staged record is written (before the reboot).
	stagingPoints := []struct {
		name, cond string
	}{
		{"pulling", "sleep 1"},
		{"writing the deployment", "ls -d /ostree/deploy/default/deploy/.staging-* >/dev/null 2>&1"},
		{"staged, before the reboot", "test -e /ostree/bootc/bootstore/staged.json"},
	}
	for _, p := range stagingPoints {
		v.exec("systemctl start --no-block bootstore-fetch-apply-updates.service", 30*time.Second)
		// Bounded in the guest, and given up as soon as the unit fails, so
		// that the shell answers the journal query below.
		wait := fmt.Sprintf("timeout 540 bash -c 'until %s; do systemctl is-failed -q bootstore-fetch-apply-updates.service && exit 3; sleep 0.1; done'", p.cond)
		if _, code, ok := v.exec(wait, 10*time.Minute); !ok || code != 0 {
			journal, _, _ := v.exec("journalctl -b -u bootstore-fetch-apply-updates.service --no-pager | tail -n 40", time.Minute)
			t.Fatalf("power cut while %s: the guest never got there; the upgrade unit's journal:\n%s", p.name, journal)
		}
		v.kill()
		t.Logf("power cut while staging (%s)", p.name)
		v = a.startVM(disk, updates)
		bootToMultiUser(t, v)
		checkBooted(t, v, "v1")
	}

	// Finalization: stage without rebooting, then cut the power at
	// increasing delays after systemd starts stopping the finalize unit,
	// and once right after the unit has stopped: the swap of the boot
	// entries is synced by then, so that boot must come up on v2.
	stopping := regexp.MustCompile(`Stopping .*Finalize Staged Deployment`)
	stopped := regexp.MustCompile(`Stopped .*Finalize Staged Deployment`)
	finalizePoints := []struct {
		name  string
		after *regexp.Regexp
		delay time.Duration
		want  string
	}{
		{"0s into the finalization", stopping, 0, ""},
		{"0.4s into the finalization", stopping, 400 * time.Millisecond, ""},
		{"1.5s into the finalization", stopping, 1500 * time.Millisecond, ""},
		{"right after the finalization (after the swap)", stopped, 0, "v2"},
	}
	booted := "v1"
	for _, p := range finalizePoints {
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
		if !v.waitConsole(mark, p.after, 5*time.Minute) {
			t.Fatalf("the shutdown never showed %q:\n%s", p.after, v.consoleTail(4000))
		}
		time.Sleep(p.delay)
		v.kill()
		v = a.startVM(disk, updates)
		bootToMultiUser(t, v)
		booted = strings.TrimSpace(v.run("cat /usr/share/bootstore-test/version", time.Minute))
		t.Logf("power cut %s: came up on %s", p.name, booted)
		if p.want != "" && booted != p.want {
			t.Errorf("power cut %s: came up on %s, want %s", p.name, booted, p.want)
		}
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

// waitConsole waits until re matches the console log after offset.
func (v *vm) waitConsole(offset int64, re *regexp.Regexp, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(v.console)
		if int64(len(data)) > offset && re.Match(data[offset:]) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}
