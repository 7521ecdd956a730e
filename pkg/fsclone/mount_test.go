package fsclone_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fsSize is the size of the test filesystems' image files (sparse): the
// smallest mkfs.xfs accepts.
const fsSize = 300 << 20

// mountFS makes a filesystem of type fstype ("xfs" with reflink, or "ext4")
// in a sparse image file, attaches it to a loop device and mounts it on a
// new directory, which it returns. It skips the test when not root or when
// the tools are missing. Unmounting and detaching happen in t.Cleanup, also
// when the test fails, and the cleanup checks that the loop device is gone.
func mountFS(t testing.TB, fstype string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make and mount loop filesystems")
	}
	var mkfs []string
	switch fstype {
	case "xfs":
		mkfs = []string{"mkfs.xfs", "-q", "-m", "reflink=1"}
	case "ext4":
		// 4KB blocks as on a real host (a 300MB image would get 1KB ones).
		mkfs = []string{"mkfs.ext4", "-q", "-F", "-b", "4096"}
	default:
		t.Fatalf("mountFS: unknown filesystem type %q", fstype)
	}
	for _, tool := range []string{mkfs[0], "losetup", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}

	dir := t.TempDir()
	img := filepath.Join(dir, fstype+".img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(fsSize); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run(t, append(mkfs, img)...)

	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("cannot attach a loop device (losetup --find --show %s): %v: %s", img, err, out)
	}
	dev := strings.TrimSpace(string(out))
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	mounted := false
	// Registered after t.TempDir, so it runs before the directory is removed.
	t.Cleanup(func() {
		if mounted {
			if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", mnt, err, out)
			}
		}
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
		// Only this test's image is checked: other processes may be using
		// loop devices at the same time.
		if out, _ := exec.Command("losetup", "-j", img).CombinedOutput(); len(strings.TrimSpace(string(out))) != 0 {
			t.Errorf("loop device still attached to %s: %s", img, out)
		}
	})
	if out, err := exec.Command("mount", "-t", fstype, dev, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount -t %s %s %s: %v: %s", fstype, dev, mnt, err, out)
	}
	mounted = true
	return mnt
}

func run(t testing.TB, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
}
