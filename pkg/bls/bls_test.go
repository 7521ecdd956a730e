package bls

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// makeTree creates a deployment tree with one kernel of version kver and
// returns the tree's root. initramfs "" means none.
func makeTree(t *testing.T, kver, vmlinuz, initramfs string) string {
	t.Helper()
	tree := t.TempDir()
	addKernel(t, tree, kver, vmlinuz, initramfs)
	return tree
}

func addKernel(t *testing.T, tree, kver, vmlinuz, initramfs string) string {
	t.Helper()
	dir := filepath.Join(tree, "usr", "lib", "modules", kver)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte(vmlinuz), 0o644); err != nil {
		t.Fatal(err)
	}
	if initramfs != "" {
		if err := os.WriteFile(filepath.Join(dir, "initramfs.img"), []byte(initramfs), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// testEntries installs n kernels into root and returns n entries for them.
func testEntries(t *testing.T, root string, n int) []Entry {
	t.Helper()
	var out []Entry
	for i := 0; i < n; i++ {
		tree := makeTree(t, "6.1.0-18-amd64", fmt.Sprintf("kernel %d", i), fmt.Sprintf("initramfs %d", i))
		linux, initrd, err := InstallKernel(root, "default", filepath.Join(tree, "usr/lib/modules/6.1.0-18-amd64"))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Entry{
			Title:      fmt.Sprintf("Debian GNU/Linux 12 (ostree:default:%d)", i),
			Linux:      linux,
			Initrd:     initrd,
			Options:    []string{"root=UUID=1234", "rw", `foo="a b"`},
			Stateroot:  "default",
			Deployment: fmt.Sprintf("/ostree/deploy/default/deploy/abc%d.0", i),
		})
	}
	return out
}

func loaderTarget(t *testing.T, root string) string {
	t.Helper()
	target, err := os.Readlink(filepath.Join(root, "boot", "loader"))
	if err != nil {
		t.Fatal(err)
	}
	return target
}

func entryFiles(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(dir, "entries"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestReadWithoutLoader(t *testing.T) {
	got, err := Read(t.TempDir())
	if err != nil || got != nil {
		t.Fatalf("Read on an empty root = %v, %v; want nil, nil", got, err)
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	for n := 1; n <= 3; n++ {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			root := t.TempDir()
			in := testEntries(t, root, n)
			if err := Write(root, in); err != nil {
				t.Fatal(err)
			}
			if got := loaderTarget(t, root); got != "loader.0" {
				t.Fatalf("boot/loader -> %q, want loader.0", got)
			}
			var wantFiles []string
			for i := 1; i <= n; i++ {
				wantFiles = append(wantFiles, fmt.Sprintf("ostree-%d-default.conf", i))
			}
			if got := entryFiles(t, filepath.Join(root, "boot", "loader.0")); !reflect.DeepEqual(got, wantFiles) {
				t.Fatalf("entry files %v, want %v", got, wantFiles)
			}
			out, err := Read(root)
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != n {
				t.Fatalf("Read returned %d entries, want %d", len(out), n)
			}
			for i := range in {
				want := in[i]
				want.Version = fmt.Sprint(n - i)
				want.Options = append(append([]string(nil), in[i].Options...), "ostree="+in[i].Deployment)
				if !reflect.DeepEqual(out[i], want) {
					t.Errorf("entry %d:\n got %+v\nwant %+v", i, out[i], want)
				}
				if DeploymentOf(out[i]) != in[i].Deployment {
					t.Errorf("DeploymentOf(entry %d) = %q", i, DeploymentOf(out[i]))
				}
			}
			data, err := os.ReadFile(filepath.Join(root, "boot", "loader", "entries", "ostree-1-default.conf"))
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("title Debian GNU/Linux 12 (ostree:default:0)\nversion %d\n"+
				"options root=UUID=1234 rw foo=\"a b\" ostree=/ostree/deploy/default/deploy/abc0.0\n"+
				"linux %s\ninitrd %s\n", n, in[0].Linux, in[0].Initrd)
			if string(data) != want {
				t.Errorf("ostree-1-default.conf:\n%s\nwant:\n%s", data, want)
			}
		})
	}
}

func TestWriteFlipsLoaderAndReplacesOldDir(t *testing.T) {
	root := t.TempDir()
	all := testEntries(t, root, 3)
	sets := [][]Entry{all, all[1:2], all[2:]}
	wantTarget := []string{"loader.0", "loader.1", "loader.0"}
	for i, set := range sets {
		if err := Write(root, set); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if got := loaderTarget(t, root); got != wantTarget[i] {
			t.Fatalf("after write %d boot/loader -> %q, want %q", i, got, wantTarget[i])
		}
		got, err := Read(root)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(set) || got[0].Deployment != set[0].Deployment {
			t.Fatalf("after write %d Read = %+v", i, got)
		}
		if _, err := os.Lstat(filepath.Join(root, "boot", "loader.tmp")); !os.IsNotExist(err) {
			t.Fatalf("boot/loader.tmp left behind: %v", err)
		}
	}
	// loader.0 held 3 entries after the first write; now it holds only the third set.
	if got := entryFiles(t, filepath.Join(root, "boot", "loader.0")); !reflect.DeepEqual(got, []string{"ostree-1-default.conf"}) {
		t.Fatalf("loader.0 not replaced: %v", got)
	}
}

func TestCrashBeforeSwapKeepsOldSet(t *testing.T) {
	root := t.TempDir()
	all := testEntries(t, root, 2)
	if err := Write(root, all); err != nil {
		t.Fatal(err)
	}
	// A crashed Write: a half-written loader.1 and a loader.tmp that never
	// got renamed.
	half := filepath.Join(root, "boot", "loader.1", "entries")
	if err := os.MkdirAll(half, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(half, "ostree-1-default.conf"), []byte("titl"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(half, "ostree-9-stale.conf"), []byte("linux /x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("loader.1", filepath.Join(root, "boot", "loader.tmp")); err != nil {
		t.Fatal(err)
	}

	got, err := Read(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Deployment != all[0].Deployment || got[1].Deployment != all[1].Deployment {
		t.Fatalf("Read after crash = %+v, want the old set", got)
	}

	if err := Write(root, all[1:]); err != nil {
		t.Fatalf("Write after crash: %v", err)
	}
	if got := loaderTarget(t, root); got != "loader.1" {
		t.Fatalf("boot/loader -> %q, want loader.1", got)
	}
	if files := entryFiles(t, filepath.Join(root, "boot", "loader.1")); !reflect.DeepEqual(files, []string{"ostree-1-default.conf"}) {
		t.Fatalf("leftovers not cleaned: %v", files)
	}
	if _, err := os.Lstat(filepath.Join(root, "boot", "loader.tmp")); !os.IsNotExist(err) {
		t.Fatalf("boot/loader.tmp left behind: %v", err)
	}
	got, err = Read(root)
	if err != nil || len(got) != 1 || got[0].Deployment != all[1].Deployment {
		t.Fatalf("Read = %+v, %v", got, err)
	}
}

func TestCrashDuringFirstWrite(t *testing.T) {
	root := t.TempDir()
	all := testEntries(t, root, 1)
	if err := os.MkdirAll(filepath.Join(root, "boot", "loader.0", "entries"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "boot", "loader.0", "entries", "junk.conf"), []byte("x"), 0o644)
	if got, err := Read(root); err != nil || got != nil {
		t.Fatalf("Read = %v, %v; want nil, nil", got, err)
	}
	if err := Write(root, all); err != nil {
		t.Fatal(err)
	}
	if files := entryFiles(t, filepath.Join(root, "boot", "loader.0")); !reflect.DeepEqual(files, []string{"ostree-1-default.conf"}) {
		t.Fatalf("entries %v", files)
	}
}

func TestWriteOstreeKargExactlyOnce(t *testing.T) {
	root := t.TempDir()
	e := testEntries(t, root, 1)[0]
	d := e.Deployment
	e.Options = []string{"ostree=" + d, "quiet", "ostree=" + d}
	e.Deployment = ""
	e.Stateroot = ""
	if err := Write(root, []Entry{e}); err != nil {
		t.Fatal(err)
	}
	got, err := Read(root)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"ostree=" + d, "quiet"}; !reflect.DeepEqual(got[0].Options, want) {
		t.Fatalf("options %q, want %q", got[0].Options, want)
	}
	if got[0].Deployment != d || got[0].Stateroot != "default" {
		t.Fatalf("deployment %q stateroot %q", got[0].Deployment, got[0].Stateroot)
	}
}

func TestWriteRejectsBadEntries(t *testing.T) {
	root := t.TempDir()
	good := testEntries(t, root, 2)
	if err := Write(root, good[:1]); err != nil {
		t.Fatal(err)
	}
	mod := func(f func(*Entry)) []Entry {
		e := good[1]
		e.Options = append([]string(nil), e.Options...)
		f(&e)
		return []Entry{e}
	}
	cases := map[string][]Entry{
		"without entries":     nil,
		"contradicts":         mod(func(e *Entry) { e.Options = append(e.Options, "ostree=/elsewhere") }),
		"no deployment":       mod(func(e *Entry) { e.Deployment = "" }),
		"no such file":        mod(func(e *Entry) { e.Linux = "/ostree/default-x/vmlinuz-1" }),
		"no linux":            mod(func(e *Entry) { e.Linux = "" }),
		"not one argument":    mod(func(e *Entry) { e.Options = append(e.Options, "a b") }),
		"unbalanced quote":    mod(func(e *Entry) { e.Options = append(e.Options, `a="b`) }),
		"title contains":      mod(func(e *Entry) { e.Title = "a\nlinux /evil" }),
		"invalid stateroot":   mod(func(e *Entry) { e.Stateroot = "a/b" }),
		"both boot":           {good[1], good[1]},
		"no stateroot":        mod(func(e *Entry) { e.Stateroot = ""; e.Deployment = "/somewhere/else" }),
		"without spaces or q": mod(func(e *Entry) { e.Deployment = "relative/path" }),
	}
	for want, entries := range cases {
		err := Write(root, entries)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Write(%s) = %v, want an error containing %q", want, err, want)
		}
	}
	// Nothing changed.
	if got := loaderTarget(t, root); got != "loader.0" {
		t.Fatalf("boot/loader -> %q after rejected writes", got)
	}
	if _, err := os.Stat(filepath.Join(root, "boot", "loader.1")); !os.IsNotExist(err) {
		t.Fatalf("rejected write left loader.1: %v", err)
	}
}

func TestReadToleratesCommentsAndUnknownKeys(t *testing.T) {
	root := t.TempDir()
	entries := filepath.Join(root, "boot", "loader.1", "entries")
	if err := os.MkdirAll(entries, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("loader.1", filepath.Join(root, "boot", "loader")); err != nil {
		t.Fatal(err)
	}
	second := "# written by hand\n\ntitle  Second\nversion 1\ngrub_users $grub_users\n" +
		"options\troot=/dev/vda3 console=\"ttyS0,115200 n8\"\noptions ostree=/ostree/deploy/os/deploy/b.0\n" +
		"linux /ostree/os-b/vmlinuz-6\n"
	first := "title First\nversion 2\noptions ostree=/ostree/deploy/os/deploy/a.0\nlinux /ostree/os-a/vmlinuz-6\ninitrd /ostree/os-a/initramfs-6.img\n"
	foreign := "title Foreign\nlinux /vmlinuz\noptions ostree=/ostree/deploy/other/deploy/c.0\n"
	os.WriteFile(filepath.Join(entries, "ostree-2-os.conf"), []byte(second), 0o644)
	os.WriteFile(filepath.Join(entries, "ostree-1-os.conf"), []byte(first), 0o644)
	os.WriteFile(filepath.Join(entries, "custom.conf"), []byte(foreign), 0o644)
	os.WriteFile(filepath.Join(entries, "README"), []byte("not an entry"), 0o644)

	got, err := Read(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{Title: "First", Version: "2", Linux: "/ostree/os-a/vmlinuz-6", Initrd: "/ostree/os-a/initramfs-6.img",
			Options: []string{"ostree=/ostree/deploy/os/deploy/a.0"}, Stateroot: "os", Deployment: "/ostree/deploy/os/deploy/a.0"},
		{Title: "Second", Version: "1", Linux: "/ostree/os-b/vmlinuz-6",
			Options:   []string{"root=/dev/vda3", `console="ttyS0,115200 n8"`, "ostree=/ostree/deploy/os/deploy/b.0"},
			Stateroot: "os", Deployment: "/ostree/deploy/os/deploy/b.0"},
		{Title: "Foreign", Linux: "/vmlinuz", Options: []string{"ostree=/ostree/deploy/other/deploy/c.0"},
			Stateroot: "other", Deployment: "/ostree/deploy/other/deploy/c.0"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Read:\n got %+v\nwant %+v", got, want)
	}

	bad := filepath.Join(entries, "ostree-3-os.conf")
	os.WriteFile(bad, []byte("title No kernel\n"), 0o644)
	if _, err := Read(root); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("Read of an entry without linux = %v, want an error naming %s", err, bad)
	}
}

func TestReadRejectsForeignLoader(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "boot", "loader", "entries"), 0o755)
	if _, err := Read(root); err == nil || !strings.Contains(err.Error(), "not a symlink") {
		t.Fatalf("Read with a boot/loader directory = %v", err)
	}
	if err := Write(root, testEntries(t, root, 1)); err == nil {
		t.Fatal("Write over a boot/loader directory succeeded")
	}
}
