package composefs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/tests/harness"
)

// layers writes three layers below data, as containers/storage's overlay
// driver keeps them (data/<id>/diff), base first.
func layers(t *testing.T, data string) []string {
	t.Helper()
	var dirs []string
	for _, id := range []string{"l1", "l2", "l3"} {
		d := filepath.Join(data, id, "diff")
		must(t, os.MkdirAll(d, 0o755))
		dirs = append(dirs, d)
	}
	file := func(l int, p, content string, mode os.FileMode) {
		full := filepath.Join(dirs[l], p)
		must(t, os.MkdirAll(filepath.Dir(full), 0o755))
		must(t, os.WriteFile(full, []byte(content), mode))
		must(t, os.Chmod(full, mode))
	}
	file(0, "usr/bin/a", "a in l1", 0o755)
	file(0, "usr/bin/hl1", "linked", 0o4755)
	must(t, os.Link(filepath.Join(dirs[0], "usr/bin/hl1"), filepath.Join(dirs[0], "usr/bin/hl2")))
	file(0, "usr/share/x", "x", 0o644)
	must(t, unix.Lsetxattr(filepath.Join(dirs[0], "usr/share/x"), "user.k", []byte("v"), 0))
	must(t, unix.Lsetxattr(filepath.Join(dirs[0], "usr/share"), "user.dir", []byte("d"), 0))
	must(t, os.Symlink("../bin/a", filepath.Join(dirs[0], "usr/share/sym")))
	must(t, os.Chown(filepath.Join(dirs[0], "usr/share/x"), 1234, 5678))
	must(t, unix.Mknod(filepath.Join(dirs[0], "usr/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, unix.Mkfifo(filepath.Join(dirs[0], "usr/fifo"), 0o600))
	file(0, "usr/empty", "", 0o644)
	file(0, "usr/opq/old", "hidden by l2", 0o644)
	file(0, "etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644)
	big, err := os.Create(filepath.Join(dirs[0], "usr/big"))
	must(t, err)
	must(t, big.Truncate(3<<20))
	_, err = big.WriteAt([]byte("end"), 3<<20-3)
	must(t, err)
	must(t, big.Close())

	file(1, "usr/bin/a", "a in l2", 0o700)
	must(t, os.MkdirAll(filepath.Join(dirs[1], "usr/share"), 0o755))
	must(t, unix.Mknod(filepath.Join(dirs[1], "usr/share/x"), unix.S_IFCHR, 0)) // whiteout
	file(1, "usr/opq/new", "new", 0o644)
	must(t, unix.Lsetxattr(filepath.Join(dirs[1], "usr/opq"), "trusted.overlay.opaque", []byte("y"), 0))
	file(2, "usr/share/doc/readme", strings.Repeat("readme ", 1000), 0o644)
	return dirs
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// overlayMount mounts layers (base first) as plain overlay lowerdirs.
func overlayMount(t *testing.T, dirs []string) string {
	t.Helper()
	mnt := t.TempDir()
	var lower []string
	for i := len(dirs) - 1; i >= 0; i-- {
		lower = append(lower, dirs[i])
	}
	must(t, unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(lower, ":")))
	t.Cleanup(func() { unmount(t, mnt) })
	return mnt
}

func unmount(t *testing.T, mnt string) {
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Errorf("unmount %s: %v", mnt, err)
		unix.Unmount(mnt, unix.MNT_DETACH)
	}
}

// writeAndMount builds the image of dirs, writes it and mounts it.
func writeAndMount(t *testing.T, data string, dirs []string, opts Options, mopts MountOptions) (string, *Tree) {
	t.Helper()
	tree, err := Build(context.Background(), dirs, opts)
	must(t, err)
	var buf bytes.Buffer
	_, err = tree.Write(&buf)
	must(t, err)
	img := filepath.Join(t.TempDir(), "image.cfs")
	must(t, os.WriteFile(img, buf.Bytes(), 0o644))
	mnt := t.TempDir()
	mopts.DataRoot = data
	must(t, Mount(img, mnt, mopts))
	t.Cleanup(func() { unmount(t, mnt) })
	return mnt, tree
}

func TestMountedImageEqualsOverlayOfLayers(t *testing.T) {
	harness.RequireRoot(t)
	data := t.TempDir()
	dirs := layers(t, data)
	want := harness.Snapshot(t, overlayMount(t, dirs))
	mnt, tree := writeAndMount(t, data, dirs, Options{DataRoot: data}, MountOptions{})
	got := harness.Snapshot(t, mnt)
	if tree.Files != 7 { // a, hl1=hl2, big, empty, new, passwd, readme
		t.Errorf("%d regular files, want 7", tree.Files)
	}
	for _, p := range want.Paths() {
		w, g := want[p], got[p]
		w.Dev, w.Ino, g.Dev, g.Ino = 0, 0, 0, 0
		if w != g {
			t.Errorf("%q:\n  overlay:   %v\n  composefs: %v", p, w, g)
		}
	}
	for _, p := range got.Paths() {
		if _, ok := want[p]; !ok {
			t.Errorf("%q only in the composefs mount", p)
		}
	}
	if got["/usr/bin/hl1"].Ino != got["/usr/bin/hl2"].Ino || got["/usr/bin/hl1"].Ino == got["/usr/bin/a"].Ino {
		t.Errorf("hardlinks are not one inode: %v %v", got["/usr/bin/hl1"], got["/usr/bin/hl2"])
	}
	// The regular files hold no data in the image: it is metadata only.
	if n, ok := got["/usr/big"]; !ok || n.Size != 3<<20 {
		t.Fatalf("/usr/big: %v", n)
	}
}

func TestVerityRefusesAChangedStoreFile(t *testing.T) {
	harness.RequireRoot(t)
	harness.RequireCommand(t, "mkfs.ext4")
	fs := harness.LoopFS(t, 64<<20, "mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "verity")
	data := filepath.Join(fs, "overlay")
	dirs := layers(t, data)
	var files []string
	for _, d := range dirs {
		filepath.Walk(d, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() && fi.Size() > 0 {
				files = append(files, p)
			}
			return err
		})
	}
	for _, f := range files {
		if err := EnableVerity(f); errors.Is(err, ErrVerityUnsupported) {
			t.Skipf("no fs-verity here: %v", err)
		} else if err != nil {
			t.Fatal(err)
		}
	}
	verity := func(layer, p string) ([]byte, error) { return MeasureVerity(filepath.Join(layer, p)) }
	mnt, _ := writeAndMount(t, data, dirs, Options{DataRoot: data, Verity: verity}, MountOptions{RequireVerity: true})
	if got, err := os.ReadFile(filepath.Join(mnt, "usr/bin/a")); err != nil || string(got) != "a in l2" {
		t.Fatalf("reading a verified file: %q, %v", got, err)
	}

	// Replace two store files behind the image's back: one by a file
	// without fs-verity, one by another file with it.
	for _, tc := range []struct{ p, store string }{
		{"usr/share/doc/readme", filepath.Join(dirs[2], "usr/share/doc/readme")},
		{"usr/opq/new", filepath.Join(dirs[1], "usr/opq/new")},
	} {
		tmp := tc.store + ".new"
		must(t, os.WriteFile(tmp, []byte("changed in the store"), 0o644))
		if tc.p == "usr/opq/new" {
			must(t, EnableVerity(tmp))
		}
		must(t, os.Rename(tmp, tc.store))
		_, err := os.ReadFile(filepath.Join(mnt, tc.p))
		if !errors.Is(err, unix.EIO) {
			t.Errorf("reading %s after its store file changed: %v, want EIO", tc.p, err)
		}
	}
	// An unchanged file still reads.
	if got, err := os.ReadFile(filepath.Join(mnt, "etc/passwd")); err != nil || !strings.HasPrefix(string(got), "root:") {
		t.Errorf("an unchanged file: %q, %v", got, err)
	}
}
