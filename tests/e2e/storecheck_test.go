package e2e

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/bootstore/bootstore/tests/harness"
)

// storeLayer and storeImage are the fields of containers/storage's
// layers.json and images.json that the tests read.
type storeLayer struct {
	ID     string `json:"id"`
	Parent string `json:"parent"`
}

type storeImage struct {
	ID       string   `json:"id"`
	TopLayer string   `json:"layer"`
	Names    []string `json:"names"`
}

func readJSONFile(t testing.TB, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// storeContents reads what the store on disk holds, as podman would.
func (h *host) storeContents() (layers []storeLayer, images []storeImage) {
	h.t.Helper()
	readJSONFile(h.t, filepath.Join(h.storageRoot(), "overlay-layers", "layers.json"), &layers)
	readJSONFile(h.t, filepath.Join(h.storageRoot(), "overlay-images", "images.json"), &images)
	return layers, images
}

// orphanLayers returns the layers no image or container reaches.
func (h *host) orphanLayers() []string {
	h.t.Helper()
	layers, images := h.storeContents()
	var containers []struct {
		Layer string `json:"layer"`
	}
	readJSONFile(h.t, filepath.Join(h.storageRoot(), "overlay-containers", "containers.json"), &containers)
	for _, c := range containers {
		images = append(images, storeImage{TopLayer: c.Layer})
	}
	parent := map[string]string{}
	for _, l := range layers {
		parent[l.ID] = l.Parent
	}
	used := map[string]bool{}
	for _, img := range images {
		for id := img.TopLayer; id != "" && !used[id]; id = parent[id] {
			used[id] = true
		}
	}
	var orphans []string
	for _, l := range layers {
		if !used[l.ID] {
			orphans = append(orphans, l.ID)
		}
	}
	return orphans
}

// assertStoreEmpty fails unless the store holds no image and no layer.
func (h *host) assertStoreEmpty(what string) {
	h.t.Helper()
	layers, images := h.storeContents()
	if len(layers) != 0 || len(images) != 0 {
		h.t.Errorf("%s left %d layers and %d images in the store", what, len(layers), len(images))
	}
}

// assertNoTemp fails if bootstore's scratch directory holds anything.
func (h *host) assertNoTemp(what string) {
	h.t.Helper()
	entries, _ := os.ReadDir(filepath.Join(h.root, "ostree/bootc/bootstore/tmp"))
	if len(entries) != 0 {
		h.t.Errorf("%s left %d temporary files", what, len(entries))
	}
}

// manifestOf fetches an image's manifest straight from the registry.
func manifestOf(t testing.TB, reg *harness.Registry, repo, tag string) imgspecv1.Manifest {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+reg.DirectAddr+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", imgspecv1.MediaTypeImageManifest+", application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m imgspecv1.Manifest
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &m) != nil {
		t.Fatalf("manifest %s:%s: %s\n%s", repo, tag, resp.Status, body)
	}
	return m
}

// corruptBlob flips bytes in the middle of a blob in the registry's storage,
// keeping its size: the registry then serves bytes that do not match the
// digest it is asked for.
func corruptBlob(t testing.TB, reg *harness.Registry, d digest.Digest) {
	t.Helper()
	path := reg.BlobPath(d)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(data) / 2; i < len(data)/2+16 && i < len(data); i++ {
		data[i] ^= 0xff
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
