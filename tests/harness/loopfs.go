package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// MkfsXFSReflink and MkfsExt4 are mkfs command lines for LoopFS.
var (
	MkfsXFSReflink = []string{"mkfs.xfs", "-q", "-m", "reflink=1"}
	MkfsExt4       = []string{"mkfs.ext4", "-q", "-F", "-b", "4096"}
	// MkfsExt4NoDType makes an ext4 without d_type, on which overlayfs
	// cannot be mounted.
	MkfsExt4NoDType = []string{"mkfs.ext4", "-q", "-F", "-O", "^filetype"}
)

// LoopFS makes a filesystem with mkfs (the image file is appended to it) in
// a sparse file of size bytes, attaches a loop device, mounts it on a new
// directory and returns that directory. It skips the test when not root or
// when a tool is missing. t.Cleanup unmounts (detaching anything still
// mounted below first) and detaches the loop device, also on failure.
func LoopFS(t testing.TB, size int64, mkfs ...string) string {
	t.Helper()
	RequireRoot(t)
	for _, tool := range []string{mkfs[0], "losetup", "mount", "umount"} {
		RequireCommand(t, tool)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command(mkfs[0], append(mkfs[1:], img)...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", mkfs, err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("cannot attach a loop device: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	// Registered after t.TempDir, so it runs before the directory is removed.
	t.Cleanup(func() {
		waitNoProcessMentions(mnt, 30e9)
		for _, sub := range mountsBelow(mnt) {
			exec.Command("umount", "-l", sub).Run()
		}
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			exec.Command("umount", "-l", mnt).Run()
			t.Logf("umount %s: %v: %s", mnt, err, out)
		}
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	if out, err := exec.Command("mount", dev, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount %s %s: %v: %s", dev, mnt, err, out)
	}
	return mnt
}

// mountsBelow lists mount points strictly below dir, deepest first.
func mountsBelow(dir string) []string {
	var out []string
	data, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(unescapeMountinfo(f[4]), dir+"/") {
			out = append([]string{unescapeMountinfo(f[4])}, out...)
		}
	}
	return out
}
