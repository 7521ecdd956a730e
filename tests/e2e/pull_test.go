package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bootstore/bootstore/pkg/progress/progresstest"
	"github.com/bootstore/bootstore/tests/harness"
)

// imageInfo is the part of `image list --format json` the tests read.
type imageInfo struct {
	ID          string   `json:"id"`
	Names       []string `json:"names"`
	Digest      string   `json:"digest"`
	Size        int64    `json:"size"`
	Roles       []string `json:"roles"`
	BoundBy     []string `json:"boundBy"`
	BoundImages []string `json:"boundImages"`
}

func (h *host) list() []imageInfo {
	h.t.Helper()
	res := h.ok("image", "list", "--format", "json")
	var infos []imageInfo
	if err := json.Unmarshal([]byte(res.stdout), &infos); err != nil {
		h.t.Fatalf("image list --format json printed invalid JSON: %v\n%s", err, res.stdout)
	}
	return infos
}

func byName(infos []imageInfo, name string) *imageInfo {
	for i := range infos {
		if slices.Contains(infos[i].Names, name) {
			return &infos[i]
		}
	}
	return nil
}

// lbiFixture is an OS image binding three app images (a .image with a
// relative link, a .container, a .image with an absolute link) and shipping
// a fourth quadlet that nothing binds.
type lbiFixture struct {
	reg                      *harness.Registry
	os, app1, app2, app3, un string
}

func pushLBIFixture(t *testing.T, reg *harness.Registry, compression string) lbiFixture {
	t.Helper()
	f := lbiFixture{
		reg:  reg,
		os:   reg.Ref("os:v1"),
		app1: reg.Ref("apps/app1:1.0"),
		app2: reg.Ref("apps/app2:1.0"),
		app3: reg.Ref("apps/app3:latest"),
		un:   reg.Ref("apps/unbound:1.0"),
	}
	for _, a := range []struct{ name, ref string }{{"app1", "apps/app1:1.0"}, {"app2", "apps/app2:1.0"}, {"app3", "apps/app3:latest"}, {"unbound", "apps/unbound:1.0"}} {
		reg.Push(t, harness.AppImage(t, a.name), a.ref, compression)
	}
	abs := harness.BoundImage("app3", f.app3)
	abs.AbsoluteLink = true
	osImg := harness.OSImage(t, harness.OSImageOptions{
		Bootable: true,
		Version:  "1",
		BoundImages: []harness.Bound{
			harness.BoundImage("app1", f.app1),
			harness.BoundContainer("app2", f.app2),
			abs,
		},
		ExtraLayers: []harness.Layer{harness.UnboundQuadlet(harness.QuadletDir+"/unbound.image", harness.ImageQuadlet(f.un))},
	})
	reg.Push(t, osImg, "os:v1", compression)
	return f
}

func TestPullOSImageWithBoundImages(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	f := pushLBIFixture(t, reg, "gzip")

	progressFile := filepath.Join(t.TempDir(), "progress.jsonl")
	pf, err := os.Create(progressFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := h.command(t.Context(), h.pullArgs("--progress-fd", "3", f.os)...)
	cmd.ExtraFiles = []*os.File{pf}
	out, err := cmd.CombinedOutput()
	pf.Close()
	if err != nil {
		t.Fatalf("bootstore image pull: %v\n%s", err, out)
	}

	infos := h.list()
	if len(infos) != 4 {
		t.Fatalf("store holds %d images, want the OS image and its 3 bound images: %+v", len(infos), infos)
	}
	osInfo := byName(infos, f.os)
	if osInfo == nil || !slices.Contains(osInfo.Roles, "host") {
		t.Fatalf("OS image %s missing or not a host image: %+v", f.os, infos)
	}
	for _, ref := range []string{f.app1, f.app2, f.app3} {
		app := byName(infos, ref)
		if app == nil {
			t.Fatalf("bound image %s was not pulled: %+v", ref, infos)
		}
		if !slices.Contains(app.Roles, "bound") || !slices.Equal(app.BoundBy, []string{osInfo.ID}) {
			t.Errorf("%s: roles %v bound by %v, want bound by %s", ref, app.Roles, app.BoundBy, osInfo.ID)
		}
		if !slices.Contains(osInfo.BoundImages, app.ID) {
			t.Errorf("host record lacks %s (%s): %v", ref, app.ID, osInfo.BoundImages)
		}
	}
	if byName(infos, f.un) != nil {
		t.Errorf("the unbound quadlet's image %s was pulled", f.un)
	}
	table := h.ok("image", "list").stdout
	if !strings.Contains(table, "bound by "+f.os) {
		t.Errorf("image list does not show the host/bound relation:\n%s", table)
	}

	data, err := os.ReadFile(progressFile)
	if err != nil {
		t.Fatal(err)
	}
	events := progresstest.ValidateLines(t, data)
	if len(events) < 3 || events[0]["type"] != "Start" {
		t.Errorf("progress: want Start then events, got %d events", len(events))
	}
	progresstest.CheckPulls(t, events)

	// Debian's podman and skopeo read the store.
	podmanIDs, err := h.podmanC.Run(t, "images", "--no-trunc", "--format", "{{.ID}}")
	if err != nil {
		t.Fatalf("podman images: %v\n%s", err, podmanIDs)
	}
	for _, info := range infos {
		if !strings.Contains(podmanIDs, info.ID) {
			t.Errorf("podman images does not list %s (%v):\n%s", info.ID, info.Names, podmanIDs)
		}
	}
	if out, err := h.podmanC.Run(t, "run", "--rm", f.app1, "true"); err != nil {
		t.Fatalf("podman run %s true: %v\n%s", f.app1, err, out)
	}
	if out, err := h.podmanC.Run(t, "run", "--rm", f.app2, "cat", "/usr/share/harness-app/app2"); err != nil || !strings.Contains(out, "app app2") {
		t.Fatalf("podman run %s cat: %v\n%s", f.app2, err, out)
	}
	skopeoRef := "containers-storage:[overlay@" + h.storageRoot() + "+" + filepath.Join(h.root, "run/bootstore/storage") + "]" + f.os
	if out, err := (harness.Skopeo{}).Run(t, "inspect", skopeoRef); err != nil || !strings.Contains(out, osInfo.Digest) {
		t.Fatalf("skopeo inspect %s: %v\n%s", skopeoRef, err, out)
	}

	// A second pull finds everything in the store: no blob is fetched.
	reg.ResetStats()
	res := h.ok(h.pullArgs(f.os)...)
	if st := reg.Stats(); st.BlobGETs != 0 {
		t.Errorf("second pull fetched %d blobs (%d bytes), want 0: %v", st.BlobGETs, st.BlobBytes, st.BlobGETsBy)
	}
	if !strings.Contains(res.stdout, "up to date") {
		t.Errorf("second pull should say the images are up to date:\n%s", res.stdout)
	}
	if got := len(h.list()); got != 4 {
		t.Errorf("after the second pull the store holds %d images, want 4", got)
	}
}

// A floating tag is compared by digest, not skipped by name: a new
// :latest behind the same name is pulled (bootc never refreshes it).
// The registry is reached through registries.conf's insecure entry, and an
// image name that only a mirror serves is pulled through the mirror.
func TestPullRefreshesFloatingTagsAndHonoursRegistriesConf(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	conf := filepath.Join(t.TempDir(), "registries.conf")
	mirrored := "mirrored.example/apps/app3:latest"
	writeFile(t, conf, `[[registry]]
location = "`+reg.Addr+`"
insecure = true

[[registry]]
location = "mirrored.example"
[[registry.mirror]]
location = "`+reg.Addr+`"
insecure = true
`)
	h.env = append(h.env, "CONTAINERS_REGISTRIES_CONF="+conf)
	reg.Push(t, harness.AppImage(t, "app3"), "apps/app3:latest", "gzip")
	osImg := harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "1", BoundImages: []harness.Bound{harness.BoundImage("app3", mirrored)}})
	reg.Push(t, osImg, "os:v1", "gzip")

	pull := []string{"image", "pull", "--signature-policy", h.policy, reg.Ref("os:v1")}
	h.ok(pull...)
	before := byName(h.list(), mirrored)
	if before == nil {
		t.Fatalf("bound image %s was not pulled through its mirror", mirrored)
	}

	reg.Push(t, harness.AppImage(t, "app3-v2"), "apps/app3:latest", "gzip")
	h.ok(pull...)
	infos := h.list()
	after := byName(infos, mirrored)
	if after == nil || after.ID == before.ID {
		t.Fatalf("the moved :latest tag was not refreshed: before %s, after %+v", before.ID, after)
	}
	if osInfo := byName(infos, reg.Ref("os:v1")); osInfo == nil || !slices.Equal(osInfo.BoundImages, []string{after.ID}) {
		t.Errorf("host record should bind the new image %s: %+v", after.ID, osInfo)
	}
}

// Images from other transports land in the same store.
func TestPullFromOCILayout(t *testing.T) {
	h := newHost(t)
	dir := filepath.Join(t.TempDir(), "layout")
	img := harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "7"})
	if err := img.WriteOCILayout(dir, "v7"); err != nil {
		t.Fatal(err)
	}
	res := h.ok("image", "pull", "--signature-policy", h.policy, "oci:"+dir+":v7")
	infos := h.list()
	if len(infos) != 1 || !slices.Contains(infos[0].Roles, "host") {
		t.Fatalf("oci: pull: want one host image, got %+v\n%s", infos, res)
	}
	if !slices.Contains(infos[0].Names, "localhost/layout:v7") {
		t.Errorf("an image from an OCI layout should be named localhost/<dir>:<tag>: %v", infos[0].Names)
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
