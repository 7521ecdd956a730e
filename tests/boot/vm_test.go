package boot

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// vm is one QEMU guest: TCG, no network, the disks given, the kernel's
// console on the first serial port (logged to a file) and the test shell
// on the second (a Unix socket).
type vm struct {
	t       *testing.T
	cmd     *exec.Cmd
	exited  chan struct{}
	dir     string
	console string
	conn    net.Conn
	buf     bytes.Buffer
	seq     int
	started time.Time
	// retryable: a guest fault ends the attempt, not the test (retry_test.go).
	retryable bool
	// crashOnShell: BOOTSTORE_BOOT_INJECT_FAULT (retry_test.go).
	crashOnShell bool
}

// startVM boots QEMU on the disks (the first is the boot disk).
func startVM(t *testing.T, disks ...string) *vm {
	t.Helper()
	// Short: Unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "bsvm-")
	if err != nil {
		t.Fatal(err)
	}
	v := &vm{t: t, dir: dir, console: filepath.Join(dir, "console.log"), exited: make(chan struct{})}
	sock := filepath.Join(dir, "shell.sock")
	// -cx16: QEMU 7.2's TCG (Debian bookworm) corrupts EFLAGS on
	// "cmpxchg16b %gs:(...)", which Linux 6.12's SLUB runs on every
	// allocation: the backports kernel double-faults within seconds of
	// boot. Without CX16 SLUB takes its locked path; 6.1 boots either way.
	// One CPU: with two, a guest panicked ("Fatal exception in interrupt")
	// in get_random_u32 with its RIP one byte into a 5-byte NOP, about
	// when the CRNG came up and the kernel patches that function's static
	// key: the mark of a CPU running code the other CPU was patching,
	// which TCG's handling of cross-modified code lets through. One CPU
	// patches only its own code.
	args := []string{"-accel", "tcg", "-cpu", "qemu64,-cx16", "-m", "2048", "-smp", "1", "-display", "none", "-monitor", "none",
		"-nic", "none", "-serial", "file:" + v.console, "-serial", "unix:" + sock + ",server=on,wait=off"}
	for i, d := range disks {
		opt := "file=" + d + ",format=raw,if=virtio,cache=unsafe"
		if i > 0 {
			opt += ",readonly=on"
		}
		args = append(args, "-drive", opt)
	}
	v.cmd = exec.Command("qemu-system-x86_64", args...)
	// QEMU's own messages go to a file, not to the test's output: a QEMU
	// that outlived a test binary killed by go test's timeout would hold
	// that pipe open, and make would wait for it for ever. Pdeathsig ends
	// such a QEMU in the first place.
	qemuLog, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer qemuLog.Close()
	v.cmd.Stdout, v.cmd.Stderr = qemuLog, qemuLog
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	v.started = time.Now()
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("starting QEMU: %v", err)
	}
	go func() { v.cmd.Wait(); close(v.exited) }()
	t.Cleanup(func() {
		v.kill()
		if t.Failed() {
			if msg, _ := os.ReadFile(filepath.Join(dir, "qemu.log")); len(msg) > 0 {
				t.Logf("QEMU said:\n%s", msg)
			}
			t.Logf("guest console (tail):\n%s", v.consoleTail(6000))
		}
		os.RemoveAll(dir)
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if v.conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU's serial socket: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return v
}

// kill ends QEMU at once, like pulling the power cord.
func (v *vm) kill() {
	if v.cmd.Process != nil {
		syscall.Kill(-v.cmd.Process.Pid, syscall.SIGKILL)
		<-v.exited
	}
	if v.conn != nil {
		v.conn.Close()
	}
}

func (v *vm) consoleTail(n int) string {
	data, _ := os.ReadFile(v.console)
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}

// kernelPanic matches the kernel's last words; a panicked guest hangs (it
// is not rebooted), so waiting for its shell could only time out.
var kernelPanic = regexp.MustCompile(`Kernel panic - not syncing[^\r\n]*`)

// failOnPanic fails the test at once when the guest's kernel panicked.
func (v *vm) failOnPanic() {
	v.t.Helper()
	data, _ := os.ReadFile(v.console)
	if m := kernelPanic.Find(data); m != nil {
		v.fault("the guest's kernel panicked %s after QEMU started: %s", time.Since(v.started).Round(time.Second), m)
	}
}

// waitShell waits until the guest's test shell answers and returns how
// long that took since QEMU started (or since since, when not zero).
func (v *vm) waitShell(timeout time.Duration) time.Duration {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, _, ok := v.exec("true", 3*time.Second); ok {
			if !v.crashOnShell {
				return time.Since(v.started)
			}
			v.crashOnShell = false
			v.exec("echo c > /proc/sysrq-trigger", 3*time.Second)
		}
		select {
		case <-v.exited:
			v.fault("QEMU exited before the guest's shell came up")
		default:
		}
		v.failOnPanic()
	}
	v.t.Fatalf("the guest's shell did not come up within %s", timeout)
	return 0
}

// exec runs line in the guest's shell and returns its output and exit
// status; ok is false when no answer came in time.
func (v *vm) exec(line string, timeout time.Duration) (string, int, bool) {
	v.seq++
	marker := fmt.Sprintf("__BOOTSTORE_TEST_%d_%d__", v.started.UnixNano()%1e6, v.seq)
	cmd := fmt.Sprintf("{ %s\n} </dev/null 2>&1; echo \"%s:$?\"", line, marker)
	// The leading newline ends any fragment queued before this frame.
	frame := "\nBSCMD " + base64.StdEncoding.EncodeToString([]byte(cmd)) + "\n"
	v.buf.Reset()
	// A guest that stopped reading its serial port fills the socket: the
	// write must not block past the command's own time.
	v.conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := v.conn.Write([]byte(frame)); err != nil {
		time.Sleep(time.Second) // callers that retry must not spin
		return "", 0, false
	}
	re := regexp.MustCompile(regexp.QuoteMeta(marker) + `:([0-9]+)\r?\n`)
	deadline := time.Now().Add(timeout)
	nextPanicCheck := time.Now().Add(5 * time.Second)
	chunk := make([]byte, 64<<10)
	for {
		if m := re.FindSubmatchIndex(v.buf.Bytes()); m != nil {
			out := string(v.buf.Bytes()[:m[0]])
			code, _ := strconv.Atoi(string(v.buf.Bytes()[m[2]:m[3]]))
			return strings.ReplaceAll(out, "\r", ""), code, true
		}
		if time.Now().After(deadline) {
			return v.buf.String(), 0, false
		}
		if time.Now().After(nextPanicCheck) {
			v.failOnPanic()
			nextPanicCheck = time.Now().Add(5 * time.Second)
		}
		v.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _ := v.conn.Read(chunk)
		v.buf.Write(chunk[:n])
	}
}

// run runs line in the guest and fails the test unless it exits 0.
func (v *vm) run(line string, timeout time.Duration) string {
	v.t.Helper()
	out, code, ok := v.exec(line, timeout)
	if !ok {
		v.t.Fatalf("guest: %s: no answer within %s; output so far:\n%s", line, timeout, out)
	}
	if code != 0 {
		v.t.Fatalf("guest: %s: exit status %d:\n%s", line, code, out)
	}
	return out
}

// bootID is the guest kernel's boot ID.
func (v *vm) bootID(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(v.run("cat /proc/sys/kernel/random/boot_id", time.Minute))
}

// rebootTimeout bounds a reboot: shutdown with the finalization, firmware,
// GRUB and boot to multi-user took 1-1.5 minutes (3 on a loaded machine).
const rebootTimeout = 10 * time.Minute

// waitReboot waits until the guest runs a boot other than old and has
// finished booting with no failed units.
func (v *vm) waitReboot(t *testing.T, old string) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(rebootTimeout)
	for time.Now().Before(deadline) {
		out, code, ok := v.exec("cat /proc/sys/kernel/random/boot_id", 5*time.Second)
		if ok && code == 0 && strings.TrimSpace(out) != "" && strings.TrimSpace(out) != old {
			bootToMultiUser(t, v)
			return time.Since(start)
		}
		select {
		case <-v.exited:
			v.fault("QEMU exited while the guest rebooted")
		default:
		}
		v.failOnPanic()
	}
	t.Fatalf("the guest did not come back from the reboot within %s", rebootTimeout)
	return 0
}

// upgradeAndReboot starts the timer's unit as the timer does, and waits for
// the reboot it ends with.
func (v *vm) upgradeAndReboot(t *testing.T) {
	t.Helper()
	boot := v.bootID(t)
	v.exec("systemctl start bootstore-fetch-apply-updates.service", 2*time.Second)
	took := v.waitReboot(t, boot)
	t.Logf("FIGURE upgrade, reboot and boot to multi-user on v2: %s", took.Round(100*time.Millisecond))
}

// lastBootTimings reads from the previous boot's journal how long the
// upgrade unit ran and how long the finalization at shutdown took.
func (v *vm) lastBootTimings(t *testing.T) (stage, finalize time.Duration) {
	t.Helper()
	span := func(unit, from, to string) time.Duration {
		out := v.run(fmt.Sprintf("journalctl -b -1 -u %s -o short-unix --no-pager", unit), time.Minute)
		var a, b float64
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			ts, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				continue
			}
			if a == 0 && strings.Contains(l, from) {
				a = ts
			}
			if strings.Contains(l, to) {
				b = ts
			}
		}
		if a == 0 || b == 0 {
			t.Logf("journal of %s:\n%s", unit, out)
			return 0
		}
		return time.Duration((b - a) * float64(time.Second)).Round(10 * time.Millisecond)
	}
	return span("bootstore-fetch-apply-updates.service", "Starting", "Staged "),
		span("bootstore-finalize-staged.service", "Stopping", "Stopped")
}
