package bls

import (
	"bufio"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.podman.io/storage/pkg/reexec"
	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/tests/harness"
)

const freezeThenHang = "bls-test-freeze-then-hang"

func init() {
	// A writer that freezes /boot as checkpointBoot does and is killed
	// before its thaw.
	reexec.Register(freezeThenHang, func() {
		boot := os.Args[1]
		dog, err := startThawWatchdog(boot)
		if err != nil {
			panic(err)
		}
		_ = dog // never stopped: this process dies with the file system frozen
		fd, err := unix.Open(boot, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			panic(err)
		}
		if err := unix.IoctlSetInt(fd, fiFreeze, 0); err != nil {
			panic(err)
		}
		os.Stdout.WriteString("frozen\n")
		select {}
	})
}

func TestMain(m *testing.M) {
	if reexec.Init() {
		return
	}
	os.Exit(m.Run())
}

// A process SIGKILLed between its freeze and its thaw leaves /boot frozen;
// its watchdog thaws it, and a writer stuck on the frozen file system goes
// on.
func TestThawWatchdogThawsAfterKill(t *testing.T) {
	boot := harness.LoopFS(t, 64<<20, harness.MkfsExt4...)
	t.Cleanup(func() {
		// Whatever happened, leave a file system that unmounts.
		if fd, err := unix.Open(boot, unix.O_RDONLY|unix.O_DIRECTORY, 0); err == nil {
			unix.IoctlSetInt(fd, fiThaw, 0)
			unix.Close(fd)
		}
	})
	cmd := reexec.Command(freezeThenHang, boot)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "frozen\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the freezing process said %q: %v", line, err)
	}
	wrote := make(chan error, 1)
	go func() { wrote <- os.WriteFile(filepath.Join(boot, "after"), []byte("x"), 0o644) }()
	select {
	case err := <-wrote:
		t.Fatalf("a write went through while /boot was frozen (%v): the freeze did not happen", err)
	case <-time.After(time.Second):
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatalf("writing after the watchdog's thaw: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("/boot stayed frozen 15 s after the process that froze it was killed")
	}
}
