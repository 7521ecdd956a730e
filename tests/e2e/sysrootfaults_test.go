package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bootstore/bootstore/tests/harness"
)

// faultFixture is an installed host (v1, one bound image) whose registry
// already has v2, so that an upgrade has work to do.
func faultFixture(t *testing.T) *host {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	reg.Push(t, harness.AppImage(t, "fapp"), "apps/fapp:1", "gzip")
	bound := []harness.Bound{harness.BoundImage("fapp", reg.Ref("apps/fapp:1"))}
	reg.Push(t, osVersion(t, "1", bound, harness.Layer{etcFile("x", "1\n")}), "os:latest", "gzip")
	h.ok(h.installArgs(reg.Ref("os:latest"), "--experimental-unified-storage")...)
	reg.Push(t, osVersion(t, "2", bound, harness.Layer{etcFile("x", "2\n")}), "os:latest", "gzip")
	return h
}

// listing is every path under root but ROOT/run with its size and mode, to
// tell whether a refused command changed anything.
func listing(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if p == filepath.Join(root, "run") {
			return filepath.SkipDir // the store's run root: scratch, per boot
		}
		if err == nil {
			b.WriteString(p + " " + fi.Mode().String() + " " + strconv.FormatInt(fi.Size(), 10) + "\n")
		}
		return nil
	})
	return b.String()
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// A sysroot mounted read-only (a rescue boot, a host whose root went
// read-only after I/O errors): what only reads still answers; what writes
// fails at once naming the read-only filesystem, and changes nothing.
func TestReadOnlySysroot(t *testing.T) {
	h := faultFixture(t)
	before := listing(t, h.root)
	mustRun(t, "mount", "--bind", h.root, h.root)
	mounted := true
	unmount := func() {
		if mounted {
			mustRun(t, "umount", h.root)
			mounted = false
		}
	}
	t.Cleanup(func() {
		if mounted {
			exec.Command("umount", "-l", h.root).Run()
		}
	})
	mustRun(t, "mount", "-o", "remount,bind,ro", h.root)

	if res := h.run("status"); res.code != 0 || !strings.Contains(res.stdout, "Booted") {
		t.Errorf("status on a read-only sysroot:\n%s", res)
	}
	if res := h.run("status", "--format", "json"); res.code != 0 {
		t.Errorf("status --format json on a read-only sysroot:\n%s", res)
	}
	// containers/storage takes the store's lock read-write even to read
	// (podman fails alike): image list is refused with the rest.
	for _, args := range [][]string{
		{"image", "list"},
		{"upgrade", "--tls-verify=false", "--signature-policy", h.policy},
		{"gc"},
		{"image", "pull", "--tls-verify=false", "--signature-policy", h.policy, "--allow-non-bootable", "docker://127.0.0.1:1/none:1"},
	} {
		res := h.run(args...)
		t.Logf("%s said: %s", args[0], strings.TrimSpace(res.stderr))
		if res.code == 0 || !strings.Contains(res.stderr, "read-only file system") || !strings.Contains(res.stderr, h.root) || !strings.Contains(res.stderr, "remount it read-write") {
			t.Errorf("%v on a read-only sysroot: want a failure naming the read-only file system under %s:\n%s", args, h.root, res)
		}
	}
	unmount()
	if after := listing(t, h.root); after != before {
		t.Errorf("commands on the read-only sysroot changed it")
	}
	h.ok("upgrade", "--quiet", "--tls-verify=false", "--signature-policy", h.policy)
	if st := h.status(); st.Status.Staged == nil {
		t.Errorf("upgrade after remounting read-write staged nothing: %+v", st.Status)
	}
}

// /boot missing or not mounted (an empty directory where the partition
// should be): bootstore must not write a fresh loader there that the
// firmware never reads. Status still answers; what would write boot
// entries fails naming /boot/loader.
func TestMissingBoot(t *testing.T) {
	h := faultFixture(t)
	boot := filepath.Join(h.root, "boot")
	if err := os.Rename(boot, boot+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(boot, 0o755); err != nil {
		t.Fatal(err)
	}
	before := listing(t, h.root)
	res := h.run("status")
	t.Logf("status said: %s%s", res.stdout, res.stderr)
	if res.code != 0 || !strings.Contains(res.stderr, "boot/loader") || !strings.Contains(res.stderr, "is /boot mounted?") {
		t.Errorf("status with /boot empty does not warn that the boot entries are missing:\n%s", res)
	}
	// gc above all: with no boot entry every deployment looks unused.
	for _, args := range [][]string{
		{"upgrade", "--tls-verify=false", "--signature-policy", h.policy},
		{"rollback"},
		{"gc"},
		{"internals", "finalize-staged"},
	} {
		res := h.run(args...)
		t.Logf("%s said: %s", args[0], strings.TrimSpace(res.stderr))
		if res.code == 0 || !strings.Contains(res.stderr, "boot/loader") || !strings.Contains(res.stderr, "is /boot mounted?") {
			t.Errorf("%v with /boot empty: want a failure naming boot/loader:\n%s", args, res)
		}
	}
	if after := listing(t, h.root); after != before {
		t.Errorf("commands with /boot empty changed the sysroot:\n%s", diffLines(before, after))
	}
	os.Remove(boot)
	if err := os.Rename(boot+".away", boot); err != nil {
		t.Fatal(err)
	}
	h.ok("upgrade", "--quiet", "--tls-verify=false", "--signature-policy", h.policy)
}

// diffLines is the lines only in a and only in b.
func diffLines(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	am, bm := in(a), in(b)
	var out strings.Builder
	for l := range am {
		if !bm[l] {
			out.WriteString("- " + l + "\n")
		}
	}
	for l := range bm {
		if !am[l] {
			out.WriteString("+ " + l + "\n")
		}
	}
	return out.String()
}
