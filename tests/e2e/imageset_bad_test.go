package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/bootstore/bootstore/tests/harness"
)

// readIndex and writeIndex edit a saved layout's index.json.
func readIndex(t *testing.T, dir string) imgspecv1.Index {
	t.Helper()
	var index imgspecv1.Index
	readJSONFile(t, filepath.Join(dir, "index.json"), &index)
	return index
}

func writeIndex(t *testing.T, dir string, index imgspecv1.Index) {
	t.Helper()
	data, err := json.Marshal(index)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "index.json"), string(data))
}

// copyDir copies a saved layout (regular files only) so each case damages
// its own copy.
func copyDir(t *testing.T, from string) string {
	t.Helper()
	to := filepath.Join(t.TempDir(), "set")
	filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), data, 0o644)
	})
	return to
}

// flipBytes corrupts a file in place, keeping its size.
func flipBytes(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(data) / 2; i < len(data)/2+16 && i < len(data); i++ {
		data[i] ^= 0xff
	}
	writeFile(t, path, string(data))
}

// A damaged image set is refused with an error naming the set and what is
// wrong in it, and neither load nor install leaves anything in the store.
func TestImageSetBadInputLeavesNothing(t *testing.T) {
	reg := harness.StartRegistry(t)
	osRef, apps := imageSetFixture(t, reg, "os:v1", "1")
	saver := newHost(t)
	good := filepath.Join(t.TempDir(), "good")
	saver.ok(saver.saveArgs(osRef, "oci:"+good)...)
	archive := filepath.Join(t.TempDir(), "good.tar")
	saver.ok(saver.saveArgs(osRef, "oci-archive:"+archive)...)
	offline(reg)

	index := readIndex(t, good)
	var hostManifest, app2Manifest imgspecv1.Manifest
	for _, d := range index.Manifests {
		var m imgspecv1.Manifest
		readJSONFile(t, filepath.Join(good, "blobs/sha256", d.Digest.Encoded()), &m)
		switch d.Annotations[imgspecv1.AnnotationRefName] {
		case osRef:
			hostManifest = m
		case apps[1]:
			app2Manifest = m
		}
	}
	// app2's own layer (app1 shares the first one).
	app2Layer := app2Manifest.Layers[len(app2Manifest.Layers)-1].Digest
	hostLayer := hostManifest.Layers[len(hostManifest.Layers)-1].Digest

	truncated := filepath.Join(t.TempDir(), "truncated.tar")
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, truncated, string(data[:len(data)/2]))

	tamperedBound := copyDir(t, good)
	flipBytes(t, filepath.Join(tamperedBound, "blobs/sha256", app2Layer.Encoded()))
	tamperedHost := copyDir(t, good)
	flipBytes(t, filepath.Join(tamperedHost, "blobs/sha256", hostLayer.Encoded()))

	tamperedManifest := copyDir(t, good)
	for _, d := range index.Manifests {
		if d.Annotations[imgspecv1.AnnotationRefName] == apps[0] {
			flipBytes(t, filepath.Join(tamperedManifest, "blobs/sha256", d.Digest.Encoded()))
		}
	}

	missing := copyDir(t, good)
	idx := readIndex(t, missing)
	var kept []imgspecv1.Descriptor
	for _, d := range idx.Manifests {
		if d.Annotations[imgspecv1.AnnotationRefName] != apps[1] {
			kept = append(kept, d)
		}
	}
	idx.Manifests = kept
	writeIndex(t, missing, idx)

	cases := []struct {
		name, src string
		names     []string
	}{
		{"truncated archive", "oci-archive:" + truncated, []string{truncated}},
		{"tampered bound layer", "oci:" + tamperedBound, []string{apps[1], tamperedBound, app2Layer.Encoded()[:12]}},
		{"tampered host layer", "oci:" + tamperedHost, []string{osRef, tamperedHost, hostLayer.Encoded()[:12]}},
		{"tampered manifest", "oci:" + tamperedManifest, []string{apps[0], tamperedManifest, "does not match its digest"}},
		{"missing bound image", "oci:" + missing, []string{apps[1], missing, "does not hold"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHost(t)
			h.expectFailure(1, c.names, "image", "load", c.src)
			h.assertStoreEmpty("image load of a damaged set")
			h.assertNoTemp("image load of a damaged set")

			h2 := newHost(t)
			h2.expectFailure(1, c.names, h2.installArgs(c.src, "--experimental-unified-storage")...)
			h2.assertStoreEmpty("install from a damaged set")
			h2.assertNoTemp("install from a damaged set")
			if deps := h2.deployments("default"); len(deps) != 0 {
				t.Errorf("install from a damaged set left deployments %v", deps)
			}
		})
	}
	if n := reg.Stats().Requests; n != 0 {
		t.Errorf("loading damaged sets asked the registry %d times", n)
	}

	// Saving to an existing output is refused and leaves it alone.
	saver.expectFailure(2, []string{archive, "exists"}, saver.saveArgs(osRef, "oci-archive:"+archive)...)
	if got, _ := os.ReadFile(archive); len(got) != len(data) {
		t.Errorf("a refused save changed %s", archive)
	}
}
