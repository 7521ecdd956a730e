package bls

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestInstallKernel(t *testing.T) {
	root := t.TempDir()
	tree := makeTree(t, "6.1.0-18-amd64", "the kernel", "the initramfs")
	modules := filepath.Join(tree, "usr/lib/modules/6.1.0-18-amd64")
	linux, initrd, err := InstallKernel(root, "default", modules)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("the kernel" + "the initramfs"))
	dirName := "default-" + hex.EncodeToString(sum[:])
	if want := "/ostree/" + dirName + "/vmlinuz-6.1.0-18-amd64"; linux != want {
		t.Fatalf("linux = %q, want %q", linux, want)
	}
	if want := "/ostree/" + dirName + "/initramfs-6.1.0-18-amd64.img"; initrd != want {
		t.Fatalf("initrd = %q, want %q", initrd, want)
	}
	for p, want := range map[string]string{linux: "the kernel", initrd: "the initramfs"} {
		got, err := os.ReadFile(filepath.Join(root, "boot", p))
		if err != nil || string(got) != want {
			t.Fatalf("%s = %q, %v", p, got, err)
		}
	}
	fi, err := os.Stat(filepath.Join(root, "boot", initrd))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("initramfs mode %v, %v; want the source's 0600", fi.Mode(), err)
	}

	// Again: nothing rewritten, no second directory.
	old := time.Now().Add(-time.Hour)
	os.Chtimes(filepath.Join(root, "boot", linux), old, old)
	l2, i2, err := InstallKernel(root, "default", modules)
	if err != nil || l2 != linux || i2 != initrd {
		t.Fatalf("second InstallKernel = %q, %q, %v", l2, i2, err)
	}
	if got := listDir(t, filepath.Join(root, "boot", "ostree")); !reflect.DeepEqual(got, []string{dirName}) {
		t.Fatalf("boot/ostree = %v", got)
	}
	if got := listDir(t, filepath.Join(root, "boot", "ostree", dirName)); len(got) != 2 {
		t.Fatalf("kernel dir = %v", got)
	}
	if fi, _ := os.Stat(filepath.Join(root, "boot", linux)); !fi.ModTime().Equal(old) {
		t.Fatal("an identical kernel was rewritten")
	}

	// A damaged file and a crashed run's temporary file are repaired.
	os.WriteFile(filepath.Join(root, "boot", linux), []byte("damaged"), 0o644)
	os.WriteFile(filepath.Join(root, "boot", "ostree", dirName, ".tmp-vmlinuz-6.1.0-18-amd64-123"), []byte("part"), 0o644)
	if _, _, err := InstallKernel(root, "default", modules); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "boot", linux)); string(got) != "the kernel" {
		t.Fatalf("damaged kernel not repaired: %q", got)
	}
	if got := listDir(t, filepath.Join(root, "boot", "ostree", dirName)); len(got) != 2 {
		t.Fatalf("leftover not removed: %v", got)
	}
}

func TestInstallKernelWithoutInitramfs(t *testing.T) {
	root := t.TempDir()
	tree := makeTree(t, "6.9", "k", "")
	linux, initrd, err := InstallKernel(root, "os", filepath.Join(tree, "usr/lib/modules/6.9"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("k"))
	if want := "/ostree/os-" + hex.EncodeToString(sum[:]) + "/vmlinuz-6.9"; linux != want || initrd != "" {
		t.Fatalf("= %q, %q; want %q, \"\"", linux, initrd, want)
	}
}

func TestInstallKernelMissingVmlinuz(t *testing.T) {
	tree := t.TempDir()
	modules := filepath.Join(tree, "usr/lib/modules/6.1.0")
	os.MkdirAll(modules, 0o755)
	_, _, err := InstallKernel(t.TempDir(), "default", modules)
	if !errors.Is(err, ErrNoKernel) || !strings.Contains(err.Error(), "no vmlinuz in "+modules) {
		t.Fatalf("err = %v", err)
	}
}

func TestInstallKernelAbsoluteSymlinkStaysInTree(t *testing.T) {
	tree := t.TempDir()
	modules := filepath.Join(tree, "usr/lib/modules/6.1.0")
	os.MkdirAll(modules, 0o755)
	os.MkdirAll(filepath.Join(tree, "boot"), 0o755)
	os.WriteFile(filepath.Join(tree, "boot", "vmlinuz-6.1.0"), []byte("tree kernel"), 0o644)
	os.Symlink("/boot/vmlinuz-6.1.0", filepath.Join(modules, "vmlinuz"))
	root := t.TempDir()
	linux, _, err := InstallKernel(root, "default", modules)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "boot", linux)); string(got) != "tree kernel" {
		t.Fatalf("installed %q, want the tree's kernel", got)
	}
}

func TestFindKernel(t *testing.T) {
	tree := t.TempDir()
	if _, _, err := FindKernel(tree); !errors.Is(err, ErrNoKernel) || !strings.Contains(err.Error(), "/usr/lib/modules/*/vmlinuz") {
		t.Fatalf("no modules dir: %v", err)
	}
	os.MkdirAll(filepath.Join(tree, "usr/lib/modules/6.1.0-9-amd64"), 0o755) // modules only, no vmlinuz
	if _, _, err := FindKernel(tree); !errors.Is(err, ErrNoKernel) {
		t.Fatalf("no vmlinuz: %v", err)
	}
	addKernel(t, tree, "6.1.0-9-amd64", "k9", "")
	kver, dir, err := FindKernel(tree)
	if err != nil || kver != "6.1.0-9-amd64" || dir != filepath.Join(tree, "usr/lib/modules/6.1.0-9-amd64") {
		t.Fatalf("one kernel: %q, %q, %v", kver, dir, err)
	}
	addKernel(t, tree, "6.1.0-18-amd64", "k18", "")
	kver, dir, err = FindKernel(tree)
	if err != nil || kver != "6.1.0-18-amd64" || dir != filepath.Join(tree, "usr/lib/modules/6.1.0-18-amd64") {
		t.Fatalf("two kernels: %q, %q, %v", kver, dir, err)
	}
}

func TestCompareVersions(t *testing.T) {
	versions := []string{"6.10.0", "6.1.0-9-amd64", "5.15.0", "6.1.0-18-amd64", "6.1.0", "6.2.0-rc1", "6.2.0"}
	sort.Slice(versions, func(i, j int) bool { return compareVersions(versions[i], versions[j]) < 0 })
	want := []string{"5.15.0", "6.1.0", "6.1.0-9-amd64", "6.1.0-18-amd64", "6.2.0", "6.2.0-rc1", "6.10.0"}
	if !reflect.DeepEqual(versions, want) {
		t.Fatalf("sorted %v, want %v", versions, want)
	}
	if compareVersions("1.0", "1.0") != 0 || compareVersions("1.01", "1.1") == 0 {
		t.Fatal("equal versions")
	}
}

func TestPruneKernels(t *testing.T) {
	root := t.TempDir()
	all := testEntries(t, root, 3)
	if err := Write(root, all[:1]); err != nil { // current: kernel 0
		t.Fatal(err)
	}
	ostreeBoot := filepath.Join(root, "boot", "ostree")
	os.MkdirAll(filepath.Join(ostreeBoot, "not-ours"), 0o755)
	os.WriteFile(filepath.Join(ostreeBoot, "README"), nil, 0o644)
	dir := func(e Entry) string { return kernelDirOf(e.Linux) }

	if err := PruneKernels(root, all[1:2]); err != nil { // keep: kernel 1
		t.Fatal(err)
	}
	got := listDir(t, ostreeBoot)
	want := []string{"README", dir(all[0]), dir(all[1]), "not-ours"}
	sort.Strings(want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after prune: %v, want %v", got, want)
	}
	if err := PruneKernels(t.TempDir(), nil); err != nil {
		t.Fatalf("prune of an empty root: %v", err)
	}
}
