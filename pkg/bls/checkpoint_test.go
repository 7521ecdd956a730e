package bls

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootstore/bootstore/tests/harness"
)

// TestCheckpointBootIsWhatGRUBReads reads a separate /boot as GRUB does,
// without replaying the journal (debugfs on the image), right after a
// synced swap of boot/loader: it must show the new target.
func TestCheckpointBootIsWhatGRUBReads(t *testing.T) {
	harness.RequireCommand(t, "debugfs")
	boot := harness.LoopFS(t, 64<<20, harness.MkfsExt4...)
	img := filepath.Join(filepath.Dir(boot), "fs.img")
	onDisk := func() string {
		out, err := exec.Command("debugfs", "-R", "stat /loader", img).CombinedOutput()
		if err != nil {
			t.Fatalf("debugfs: %v\n%s", err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "Fast link dest:") {
				return strings.Trim(strings.TrimSpace(strings.SplitN(l, ":", 2)[1]), `"`)
			}
		}
		return ""
	}
	swap := func(target string) {
		tmp := filepath.Join(boot, "loader.tmp")
		if err := os.Symlink(target, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(boot, "loader")); err != nil {
			t.Fatal(err)
		}
		if err := syncDir(boot); err != nil {
			t.Fatal(err)
		}
	}
	swap("loader.0")
	if err := checkpointBoot(boot); err != nil {
		t.Fatal(err)
	}
	if got := onDisk(); got != "loader.0" {
		t.Fatalf("after the first checkpoint the image's loader -> %q", got)
	}
	swap("loader.1")
	t.Logf("synced but not checkpointed, the image says loader -> %q", onDisk())
	if err := checkpointBoot(boot); err != nil {
		t.Fatal(err)
	}
	if got := onDisk(); got != "loader.1" {
		t.Errorf("after the checkpoint the image's loader -> %q, want loader.1", got)
	}
	// Thawed: the file system takes writes again.
	if err := os.WriteFile(filepath.Join(boot, "after"), []byte("x"), 0o644); err != nil {
		t.Errorf("writing after the checkpoint: %v", err)
	}
}
