package e2e

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/bootstore/bootstore/tests/harness"
)

// imageSetFixture pushes two app images that share a layer and an OS image
// binding both.
func imageSetFixture(t *testing.T, reg *harness.Registry, tag, version string) (osRef string, apps []string) {
	t.Helper()
	app1 := harness.AppImage(t, "app1")
	app2 := app1
	app2.Layers = append(slices.Clone(app1.Layers), harness.WithParents(harness.Layer{{Path: "/usr/share/harness-app/app2", Type: harness.File, Data: []byte("app app2\n")}}))
	reg.Push(t, app1, "apps/app1:1", "gzip")
	reg.Push(t, app2, "apps/app2:1", "gzip")
	apps = []string{reg.Ref("apps/app1:1"), reg.Ref("apps/app2:1")}
	bound := []harness.Bound{harness.BoundImage("app1", apps[0]), harness.BoundContainer("app2", apps[1])}
	reg.Push(t, osVersion(t, version, bound, harness.Layer{etcFile("version", version+"\n")}), tag, "gzip")
	return reg.Ref(tag), apps
}

// offline makes the registry refuse every request and counts them from
// zero: a test then asserts that nothing asked.
func offline(reg *harness.Registry) {
	reg.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "offline", http.StatusServiceUnavailable)
		return true
	})
	reg.ResetStats()
}

func online(reg *harness.Registry) {
	reg.ClearFault()
	reg.ResetStats()
}

func (h *host) saveArgs(image, output string, args ...string) []string {
	return append([]string{"image", "save", "--tls-verify=false", "--signature-policy", h.policy, image, "--output", output}, args...)
}

// layoutFiles reads an OCI layout from a directory or an archive: every
// file's content by its path in the layout.
func layoutFiles(t *testing.T, dir, archive string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	if archive != "" {
		f, err := os.Open(archive)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		tr := tar.NewReader(f)
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", archive, err)
			}
			if hdr.Typeflag == tar.TypeReg {
				data, _ := io.ReadAll(tr)
				files[strings.TrimPrefix(hdr.Name, "./")] = data
			}
		}
		return files
	}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			files[rel], _ = os.ReadFile(p)
		}
		return nil
	})
	return files
}

// checkImageSet asserts an image set's index (roles, references) and that
// every blob is stored once although the images share layers.
func checkImageSet(t *testing.T, files map[string][]byte, host string, bound []string) {
	t.Helper()
	var index imgspecv1.Index
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	roles := map[string]string{}
	referenced := map[digest.Digest]bool{}
	perImage := 0
	for _, d := range index.Manifests {
		name := d.Annotations[imgspecv1.AnnotationRefName]
		if d.Annotations["org.bootstore.image.reference"] != name {
			t.Errorf("%s: org.bootstore.image.reference = %q", name, d.Annotations["org.bootstore.image.reference"])
		}
		if d.Annotations["org.bootstore.image.source-digest"] != d.Digest.String() {
			t.Errorf("%s: the source digest %s differs from the stored manifest %s although nothing was recompressed",
				name, d.Annotations["org.bootstore.image.source-digest"], d.Digest)
		}
		roles[name] = d.Annotations["org.bootstore.image.role"]
		var m imgspecv1.Manifest
		if err := json.Unmarshal(files["blobs/sha256/"+d.Digest.Encoded()], &m); err != nil {
			t.Fatalf("manifest of %s: %v", name, err)
		}
		referenced[d.Digest], referenced[m.Config.Digest] = true, true
		perImage += 2 + len(m.Layers)
		for _, l := range m.Layers {
			referenced[l.Digest] = true
		}
	}
	want := map[string]string{host: "host"}
	for _, b := range bound {
		want[b] = "bound"
	}
	if !mapsEqual(roles, want) {
		t.Errorf("index roles %v, want %v", roles, want)
	}
	var blobs []string
	for p := range files {
		if strings.HasPrefix(p, "blobs/") {
			blobs = append(blobs, p)
		}
	}
	if len(blobs) != len(referenced) {
		t.Errorf("the set stores %d blobs, its manifests reference %d distinct ones", len(blobs), len(referenced))
	}
	if len(referenced) >= perImage {
		t.Errorf("the fixture's images share a base layer: %d distinct blobs should be fewer than %d per image", len(referenced), perImage)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestImageSaveThenLoadWithRegistryDown(t *testing.T) {
	reg := harness.StartRegistry(t)
	osRef, apps := imageSetFixture(t, reg, "os:v1", "1")
	saver := newHost(t)
	archive := filepath.Join(t.TempDir(), "set.ociarchive")
	out := saver.ok(saver.saveArgs(osRef, "oci-archive:"+archive)...).stdout
	if !strings.Contains(out, "3 images") {
		t.Errorf("image save:\n%s", out)
	}
	if entries, _ := os.ReadDir(saver.root); len(entries) != 0 {
		t.Errorf("image save wrote into the sysroot: %v", entries)
	}
	checkImageSet(t, layoutFiles(t, "", archive), osRef, apps)

	offline(reg)
	h := newHost(t)
	h.ok("image", "load", "oci-archive:"+archive)
	if n := reg.Stats().Requests; n != 0 {
		t.Errorf("image load sent %d requests to the registry", n)
	}
	infos := h.list()
	osInfo := byName(infos, osRef)
	if osInfo == nil || !slices.Contains(osInfo.Roles, "host") || len(osInfo.BoundImages) != 2 {
		t.Fatalf("the loaded OS image is not recorded as a host binding two images: %+v", infos)
	}
	for _, ref := range apps {
		app := byName(infos, ref)
		if app == nil || !slices.Contains(osInfo.BoundImages, app.ID) {
			t.Errorf("bound image %s was not loaded under its registry name: %+v", ref, infos)
		}
	}
	if out, err := h.podmanC.Run(t, "run", "--rm", apps[0], "cat", "/usr/share/harness-app/app1"); err != nil || out != "app app1\n" {
		t.Errorf("podman run %s: %q, %v", apps[0], out, err)
	}
	if out := h.ok("image", "load", "oci-archive:"+archive).stdout; strings.Count(out, "already present") != 3 {
		t.Errorf("a second load should find every image present:\n%s", out)
	}
	h.assertNoTemp("image load")

	// A split host from the same archive: the bound images come from it too.
	split := newHost(t)
	split.ok(split.installArgs("oci-archive:" + archive)...)
	if n := reg.Stats().Requests; n != 0 {
		t.Errorf("a split install from the archive sent %d requests to the registry", n)
	}
	infos = split.list()
	if len(infos) != 2 || byName(infos, apps[0]) == nil || byName(infos, apps[1]) == nil {
		t.Errorf("a split host's store holds only the bound images, by their registry names: %+v", infos)
	}
	if st := split.status(); st.Status.Booted.Image == nil || st.Status.Booted.Image.Image.Image != osRef || st.Status.Booted.Bootstore.Storage != "split" {
		t.Errorf("the split host should boot %s: %+v", osRef, st.Status.Booted)
	}
}

// A host installed from an image set, and upgraded from another, with the
// registry refusing everything, records the registry references: the next
// online upgrade asks the registry and finds what it serves.
func TestInstallAndUpgradeFromImageSetsOffline(t *testing.T) {
	reg := harness.StartRegistry(t)
	osRef, apps := imageSetFixture(t, reg, "os:latest", "1")
	h := newHost(t)
	dir := filepath.Join(t.TempDir(), "v1")
	h.ok(h.saveArgs(osRef, "oci:"+dir)...)
	checkImageSet(t, layoutFiles(t, dir, ""), osRef, apps)

	offline(reg)
	h.ok(h.installArgs("oci:"+dir, "--experimental-unified-storage")...)
	if n := reg.Stats().Requests; n != 0 {
		t.Errorf("install from an image set sent %d requests to the registry", n)
	}
	st := h.status()
	if img := st.Status.Booted.Image; img == nil || img.Image.Image != osRef {
		t.Errorf("the booted image should be recorded as %s: %+v", osRef, img)
	}
	origins, _ := filepath.Glob(filepath.Join(h.root, "ostree/deploy/default/deploy/*.origin"))
	if len(origins) != 1 {
		t.Fatalf("origins: %v", origins)
	}
	if data, _ := os.ReadFile(origins[0]); !strings.Contains(string(data), "container-image-reference=ostree-unverified-registry:"+osRef+"\n") {
		t.Errorf("the origin should track the registry:\n%s", data)
	}
	if n := len(st.Status.Booted.Bootstore.BoundImages); n != 2 {
		t.Errorf("the deployment binds %d images, want 2", n)
	}

	// v2 with a third bound image, carried in an archive.
	online(reg)
	reg.Push(t, harness.AppImage(t, "app3"), "apps/app3:1", "gzip")
	bound2 := []harness.Bound{harness.BoundImage("app1", apps[0]), harness.BoundContainer("app2", apps[1]), harness.BoundImage("app3", reg.Ref("apps/app3:1"))}
	reg.Push(t, osVersion(t, "2", bound2, harness.Layer{etcFile("version", "2\n")}), "os:latest", "gzip")
	archive := filepath.Join(t.TempDir(), "v2.tar")
	h.ok(h.saveArgs(osRef, "oci-archive:"+archive)...)

	offline(reg)
	h.ok("upgrade", "--image-set", "oci-archive:"+archive)
	if n := reg.Stats().Requests; n != 0 {
		t.Errorf("upgrade --image-set sent %d requests to the registry", n)
	}
	if st := h.status(); versionOf(st, "staged") != "2" || len(st.Status.Staged.Bootstore.BoundImages) != 3 {
		t.Fatalf("after upgrade --image-set: staged %s with %+v", versionOf(st, "staged"), st.Status.Staged)
	}
	if byName(h.list(), reg.Ref("apps/app3:1")) == nil {
		t.Errorf("the new bound image was not loaded from the archive")
	}
	h.ok("internals", "finalize-staged")
	h.ok("internals", "simulate-reboot")

	// Online again: the registry serves what is booted, then v3.
	online(reg)
	if out := h.ok("upgrade", "--tls-verify=false", "--signature-policy", h.policy).stdout; !strings.Contains(out, "No update available") {
		t.Errorf("online upgrade after the offline one should find nothing new:\n%s", out)
	}
	if s := reg.Stats(); s.BlobGETs != 0 || s.ManifestGETs+s.ManifestHEADs == 0 {
		t.Errorf("the up-to-date check should ask the registry for the manifest and fetch no blob: %+v", s)
	}
	reg.Push(t, osVersion(t, "3", bound2, harness.Layer{etcFile("version", "3\n")}), "os:latest", "gzip")
	h.ok("upgrade", "--tls-verify=false", "--signature-policy", h.policy)
	if st := h.status(); versionOf(st, "staged") != "3" {
		t.Errorf("online upgrade after the offline install: staged %s, want 3", versionOf(st, "staged"))
	}
}

// switch reads an image set too; upgrade --image-set refuses a set of
// another image.
func TestSwitchToImageSetOffline(t *testing.T) {
	reg := harness.StartRegistry(t)
	osRef, _ := imageSetFixture(t, reg, "os:v1", "1")
	reg.Push(t, osVersion(t, "other", nil, harness.Layer{etcFile("version", "other\n")}), "other:1", "gzip")
	h := newHost(t)
	h.ok(h.installArgs(osRef, "--experimental-unified-storage")...)
	archive := filepath.Join(t.TempDir(), "other.tar")
	h.ok(h.saveArgs(reg.Ref("other:1"), "oci-archive:"+archive)...)

	offline(reg)
	h.expectFailure(1, []string{reg.Ref("other:1"), osRef, "switch"}, "upgrade", "--image-set", "oci-archive:"+archive)
	h.ok("switch", "--transport", "oci-archive", archive)
	if n := reg.Stats().Requests; n != 0 {
		t.Errorf("switch to an image set sent %d requests to the registry", n)
	}
	st := h.status()
	if versionOf(st, "staged") != "other" || st.Status.Staged.Image.Image.Image != reg.Ref("other:1") {
		t.Errorf("switch to the set: staged %+v", st.Status.Staged)
	}
}

// --compression-format recompresses every layer of the set (here zstd);
// the set records the registry's digests beside its own, and loads offline.
func TestImageSaveRecompresses(t *testing.T) {
	reg := harness.StartRegistry(t)
	osRef, apps := imageSetFixture(t, reg, "os:v1", "1")
	h := newHost(t)
	dir := filepath.Join(t.TempDir(), "zstd")
	h.ok(h.saveArgs(osRef, "oci:"+dir, "--compression-format", "zstd")...)
	index := readIndex(t, dir)
	if len(index.Manifests) != 3 {
		t.Fatalf("want 3 images in the set, got %d", len(index.Manifests))
	}
	for _, d := range index.Manifests {
		name := d.Annotations[imgspecv1.AnnotationRefName]
		if src := d.Annotations["org.bootstore.image.source-digest"]; src == "" || src == d.Digest.String() {
			t.Errorf("%s: source digest %q should be the registry's, not the recompressed %s", name, src, d.Digest)
		}
		var m imgspecv1.Manifest
		readJSONFile(t, filepath.Join(dir, "blobs/sha256", d.Digest.Encoded()), &m)
		for _, l := range m.Layers {
			if l.MediaType != imgspecv1.MediaTypeImageLayerZstd {
				t.Errorf("%s: layer %s is %s, want zstd", name, l.Digest, l.MediaType)
			}
		}
	}
	offline(reg)
	h.ok("image", "load", "oci:"+dir)
	if n := reg.Stats().Requests; n != 0 {
		t.Errorf("image load sent %d requests to the registry", n)
	}
	for _, ref := range append([]string{osRef}, apps...) {
		if byName(h.list(), ref) == nil {
			t.Errorf("%s was not loaded", ref)
		}
	}
}
