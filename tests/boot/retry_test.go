package boot

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// Under TCG a guest's kernel panic or QEMU's own death is more often the
// emulator's fault than the guest's: QEMU 7.2's TCG corrupts EFLAGS on one
// instruction (see startVM's -cx16), and how it translates depends on the
// host's CPU, so a machine with another CPU can meet another such fault.
// CI met one 33 s into a first boot that had passed on this machine in
// every run; one met here later is why guests have one CPU (startVM), and
// this retry covers the faults not yet known. A subtest that meets such a fault runs once more, on a fresh
// copy of the disk as install to-disk left it; the fault and the guest's
// console are logged, and a fault that comes back (bootstore's, say a
// kernel command line that cannot boot) fails the test. A guest that hangs
// or fails a check is never retried.

// guestFault is what a retryable VM panics with in place of t.Fatal.
type guestFault struct{ msg string }

// attempt is one run of a subtest's body; its VMs are retryable unless it
// is the last attempt.
type attempt struct {
	t    *testing.T
	last bool
	vms  []*vm
}

// startVM boots QEMU on the disks as startVM does, for this attempt.
func (a *attempt) startVM(disks ...string) *vm {
	a.t.Helper()
	v := startVM(a.t, disks...)
	v.retryable = !a.last
	// On demand, the first VM of a first attempt crashes its kernel as
	// soon as its shell answers: the retry is then seen to work.
	v.crashOnShell = os.Getenv("BOOTSTORE_BOOT_INJECT_FAULT") == "1" && !a.last && len(a.vms) == 0
	a.vms = append(a.vms, v)
	return v
}

// retryOnGuestFault runs body, and once more on a fresh copy of disk when
// the first run met a guest fault.
func retryOnGuestFault(t *testing.T, disk string, body func(a *attempt)) {
	t.Helper()
	installed := disk + ".installed"
	copyDisk(t, disk, installed)
	defer os.Remove(installed)
	for n := 1; ; n++ {
		a := &attempt{t: t, last: n == 2}
		fault := runAttempt(a, body)
		if fault == nil {
			return
		}
		for _, v := range a.vms {
			v.kill()
			msg, _ := os.ReadFile(filepath.Join(v.dir, "qemu.log"))
			t.Logf("attempt %d: QEMU said %q; guest console:\n%s", n, msg, v.consoleFault())
		}
		t.Logf("GUEST FAULT, attempt %d: %s; running the subtest again on a fresh copy of the installed disk", n, fault.msg)
		copyDisk(t, installed, disk)
	}
}

// runAttempt runs body and returns the guest fault that ended it, if any.
func runAttempt(a *attempt, body func(a *attempt)) (fault *guestFault) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(guestFault)
			if !ok {
				panic(r)
			}
			fault = &f
		}
	}()
	body(a)
	return nil
}

// fault ends the test (or, in a retryable VM, the attempt) for a fault of
// the guest's kernel or of QEMU.
func (v *vm) fault(format string, args ...any) {
	v.t.Helper()
	msg := fmt.Sprintf(format, args...)
	if v.retryable {
		panic(guestFault{msg})
	}
	v.t.Fatal(msg)
}

// oopsStart matches the first line of the kernel's report of a fault, which
// a fixed tail of the console can cut off (a panic's stack runs long).
var oopsStart = regexp.MustCompile(`\[ *[0-9.]+\] (BUG|Oops|general protection|invalid opcode|int3|double fault|kernel BUG)`)

// consoleFault is the guest console from the kernel's first fault report
// on (at most 12 KiB), or its tail when there is none (QEMU died).
func (v *vm) consoleFault() string {
	data, _ := os.ReadFile(v.console)
	if loc := oopsStart.FindIndex(data); loc != nil {
		data = data[loc[0]:]
		if len(data) > 12<<10 {
			data = data[:12<<10]
		}
		return string(data)
	}
	return v.consoleTail(4000)
}

// copyDisk copies a sparse disk image.
func copyDisk(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "--sparse=always", from, to).CombinedOutput(); err != nil {
		t.Fatalf("copying %s to %s: %v: %s", from, to, err, out)
	}
}
