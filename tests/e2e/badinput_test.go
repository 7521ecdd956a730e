package e2e

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/tests/harness"
)

// randomBytes returns n bytes that do not compress.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// bigOSImage is a bootable image with one layer of size incompressible bytes.
func bigOSImage(t *testing.T, size int) harness.Image {
	return harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "big", ExtraLayers: []harness.Layer{
		harness.WithParents(harness.Layer{{Path: "/usr/share/big/blob", Type: harness.File, Data: randomBytes(size, uint64(size))}}),
	}})
}

// expectFailure runs bootstore, wants exit code, and wants stderr to name
// every one of names.
func (h *host) expectFailure(code int, names []string, args ...string) result {
	h.t.Helper()
	res := h.run(args...)
	h.t.Logf("bootstore %s said: %s", args[len(args)-1], strings.TrimSpace(res.stderr))
	if res.code != code {
		h.t.Errorf("bootstore %s: want exit %d\n%s", strings.Join(args, " "), code, res)
	}
	for _, n := range names {
		if !strings.Contains(res.stderr, n) {
			h.t.Errorf("bootstore %s: the error does not name %q:\n%s", strings.Join(args, " "), n, res.stderr)
		}
	}
	return res
}

func TestPullRejectsBadImageNames(t *testing.T) {
	h := newHost(t)
	for _, name := range []string{"UPPER/Case:tag", "docker://", "oci:", "registry.example/app:bad tag", "dir:"} {
		h.expectFailure(2, []string{name}, h.pullArgs(name)...)
	}
	if entries, _ := os.ReadDir(h.root); len(entries) != 0 {
		t.Errorf("a rejected name left files in the sysroot: %v", entries)
	}
}

func TestPullRefusesNonBootableImage(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	reg.Push(t, harness.AppImage(t, "notanos"), "notanos:1", "gzip")
	layer := manifestOf(t, reg, "notanos", "1").Layers[0].Digest
	ref := reg.Ref("notanos:1")

	h.expectFailure(3, []string{ref, "containers.bootc=1", "--allow-non-bootable"}, h.pullArgs(ref)...)
	if n := reg.Stats().BlobGETsBy[layer]; n != 0 {
		t.Errorf("refusing a non-bootable image fetched its layer %d times", n)
	}
	h.assertStoreEmpty("refusing a non-bootable image")

	h.ok(h.pullArgs("--allow-non-bootable", ref)...)
	if infos := h.list(); len(infos) != 1 {
		t.Errorf("--allow-non-bootable: want 1 image, got %+v", infos)
	}
}

func TestPullRejectsInvalidBoundImages(t *testing.T) {
	reg := harness.StartRegistry(t)
	reg.Push(t, harness.AppImage(t, "app1"), "apps/app1:1", "gzip")
	good := harness.BoundImage("good", reg.Ref("apps/app1:1"))
	cases := []struct {
		name  string
		bound []harness.Bound
		extra harness.Layer
		names []string
	}{
		{name: "not-a-symlink", extra: harness.Layer{{Path: harness.BoundImagesDir + "/plain.image", Type: harness.File, Data: []byte(harness.ImageQuadlet(reg.Ref("apps/app1:1")))}},
			names: []string{"plain.image", "symlink"}},
		{name: "wrong-extension", bound: []harness.Bound{{EntryName: "app.conf", Quadlet: harness.QuadletDir + "/app.conf", Content: harness.ImageQuadlet(reg.Ref("apps/app1:1"))}},
			names: []string{"app.conf"}},
		{name: "missing-image-key", bound: []harness.Bound{{EntryName: "empty.image", Quadlet: harness.QuadletDir + "/empty.image", Content: "[Image]\nPull=always\n"}},
			names: []string{"empty.image", "Image="}},
		{name: "specifier", bound: []harness.Bound{harness.BoundContainer("spec", reg.Addr+"/%u/app:1")},
			names: []string{"spec.container", "specifier"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHost(t)
			opts := harness.OSImageOptions{Bootable: true, Version: c.name, BoundImages: append([]harness.Bound{good}, c.bound...)}
			if c.extra != nil {
				opts.ExtraLayers = []harness.Layer{harness.WithParents(c.extra)}
			}
			reg.Push(t, harness.OSImage(t, opts), "bad/"+c.name+":1", "gzip")
			h.expectFailure(6, append(c.names, "invalid logically bound image"), h.pullArgs(reg.Ref("bad/"+c.name+":1"))...)
			for _, info := range h.list() {
				if len(info.Roles) != 0 {
					t.Errorf("an OS image with invalid bound images was recorded: %+v", info)
				}
			}
		})
	}
}

func TestPullReportsRegistryFailures(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	unreachable := harness.UnreachableAddr(t) + "/os:v1"
	h.expectFailure(1, []string{unreachable, "connection refused"}, h.pullArgs(unreachable)...)
	missing := reg.Ref("nosuch/os:v1")
	h.expectFailure(1, []string{missing, "manifest unknown"}, h.pullArgs(missing)...)
	h.assertStoreEmpty("failed pulls")

	// A blob whose bytes do not match its digest: the pull fails naming the
	// blob, and the layers committed before it are removed again.
	reg.Push(t, bigOSImage(t, 2<<20), "corrupt:1", "gzip")
	m := manifestOf(t, reg, "corrupt", "1")
	bad := m.Layers[len(m.Layers)-1].Digest
	corruptBlob(t, reg, bad)
	ref := reg.Ref("corrupt:1")
	h.expectFailure(1, []string{ref, bad.Encoded()[:12]}, h.pullArgs(ref)...)
	h.assertStoreEmpty("a pull of a corrupt blob")
	h.assertNoTemp("a pull of a corrupt blob")
}

func TestPullRefusesImageLargerThanFreeSpace(t *testing.T) {
	h := newHost(t)
	if err := unix.Mount("tmpfs", h.root, "tmpfs", 0, "size=12m"); err != nil {
		t.Skipf("mounting a small tmpfs: %v", err)
	}
	reg := harness.StartRegistry(t)
	reg.Push(t, bigOSImage(t, 24<<20), "huge:1", "gzip")
	m := manifestOf(t, reg, "huge", "1")
	ref := reg.Ref("huge:1")
	h.expectFailure(4, []string{"insufficient free space", ref}, h.pullArgs(ref)...)
	for _, l := range m.Layers {
		if n := reg.Stats().BlobGETsBy[l.Digest]; n != 0 {
			t.Errorf("layer %s was fetched %d times although the image cannot fit", l.Digest, n)
		}
	}
	h.assertStoreEmpty("refusing an image too large for the disk")
}

// A pull killed with SIGKILL in the middle of a blob leaves nothing that
// the next pull trips over, and the next pull leaves no orphan layer.
func TestPullKilledMidBlobThenRetried(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	reg.Push(t, bigOSImage(t, 8<<20), "os:v1", "gzip")
	ref := reg.Ref("os:v1")

	stalled := make(chan struct{})
	reg.StallBlob(4<<20, stalled)
	cmd := h.command(t.Context(), h.pullArgs(ref)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stalled:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatal("the pull never reached the big blob")
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	reg.ClearFault()

	h.ok(h.pullArgs(ref)...)
	if orphans := h.orphanLayers(); len(orphans) != 0 {
		t.Errorf("after the retried pull %d layers belong to no image: %v", len(orphans), orphans)
	}
	h.assertNoTemp("the retried pull")
	if infos := h.list(); len(infos) != 1 || !slices.Contains(infos[0].Roles, "host") {
		t.Errorf("after the retried pull: %+v", infos)
	}
}

// AuthFile= in a bound image's quadlet is honoured (bootc rejects it): the
// image behind authentication is pulled with that file's credentials while
// everything else is pulled anonymously, and without it the pull fails
// naming the image.
func TestPullHonoursBoundImageAuthFile(t *testing.T) {
	reg := harness.StartRegistry(t)
	const user, pass = "lbi", "s3cret"
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	reg.Push(t, harness.AppImage(t, "private"), "private/app:1", "gzip")
	reg.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if (r.URL.Path == "/v2/" || strings.HasPrefix(r.URL.Path, "/v2/private/")) && r.Header.Get("Authorization") != want {
			w.Header().Set("WWW-Authenticate", `Basic realm="harness"`)
			w.WriteHeader(http.StatusUnauthorized)
			return true
		}
		return false
	})
	authFile := filepath.Join(t.TempDir(), "auth.json")
	writeFile(t, authFile, fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, reg.Addr, base64.StdEncoding.EncodeToString([]byte(user+":"+pass))))
	private := reg.Ref("private/app:1")

	withAuth := harness.BoundImage("private", private)
	withAuth.Content = harness.ImageQuadlet(private) + "AuthFile=" + authFile + "\n"
	reg.Push(t, harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "1", BoundImages: []harness.Bound{withAuth}}), "os:auth", "gzip")
	reg.Push(t, harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "2", BoundImages: []harness.Bound{harness.BoundImage("private", private)}}), "os:noauth", "gzip")

	h := newHost(t)
	h.ok(h.pullArgs(reg.Ref("os:auth"))...)
	if byName(h.list(), private) == nil {
		t.Fatalf("the bound image behind authentication was not pulled")
	}
	h2 := newHost(t)
	h2.expectFailure(1, []string{private, "private.image"}, h2.pullArgs(reg.Ref("os:noauth"))...)
}
