// Package embedded reads, on the host, the read-only containers/storage
// store that `bootstore image embed` puts inside an OS image (the
// "physically bound" apps), and gives deployments without one an empty
// store, so that podman configured with it as an additional image store
// (contrib/storage/storage.conf) works on every deployment.
//
// Lifecycle: a deployment is written from an OS image; EnsureStore runs on
// the staging tree and leaves an embedded store, or an empty one, at
// DefaultPath; Images lists what a tree (a deployment, or an OS image
// mounted from the unified store) embeds, for the LBI pull (an LBI the OS
// image embeds is not pulled again), `image list` (role "embedded") and
// gc (a kept deployment's tree is never touched).
//
// Files read, inside the tree (containers/storage's on-disk format):
//
//	<store>/overlay-images/images.json   []storage.Image
//	<store>/overlay-layers/layers.json   []storage.Layer (diff-size per layer)
//
// Files written by EnsureStore when <store> does not exist: the empty
// directories overlay, overlay-images, overlay-layers and the empty lock
// files overlay-images/images.lock and overlay-layers/layers.lock, which a
// read-only store must have because podman cannot create them on a read-only
// /usr.
package embedded

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
)

// DefaultPath is where `image embed` puts the store unless told otherwise.
const DefaultPath = "/usr/lib/containers/storage"

// Label is the OS image config label holding the store's path.
const Label = "org.bootstore.embedded-store"

// Image is one embedded image.
type Image struct {
	ID     string        `json:"id"`
	Names  []string      `json:"names"`
	Digest digest.Digest `json:"digest"`
	// Layers are the image's layer IDs, base first.
	Layers []string `json:"layers"`
	// Size is the sum of its layers' uncompressed sizes.
	Size int64 `json:"size"`
}

// record mirrors the fields of containers/storage's image and layer
// records that are read here.
type imageRecord struct {
	ID       string        `json:"id"`
	Digest   digest.Digest `json:"digest"`
	Names    []string      `json:"names"`
	TopLayer string        `json:"layer"`
}

type layerRecord struct {
	ID       string `json:"id"`
	Parent   string `json:"parent"`
	DiffSize int64  `json:"diff-size"`
}

// storeDir is storePath inside tree, refusing paths that leave it.
func storeDir(tree, storePath string) (string, error) {
	if storePath == "" {
		storePath = DefaultPath
	}
	rel := strings.TrimPrefix(path.Clean("/"+storePath), "/")
	if rel == "" {
		return "", fmt.Errorf("embedded store path %q is not below /", storePath)
	}
	return filepath.Join(tree, rel), nil
}

// Images lists the images embedded in tree's store at storePath ("":
// DefaultPath), sorted by ID. A tree without a store embeds nothing.
func Images(tree, storePath string) ([]Image, error) {
	dir, err := storeDir(tree, storePath)
	if err != nil {
		return nil, err
	}
	var images []imageRecord
	if err := readJSON(filepath.Join(dir, "overlay-images", "images.json"), &images); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var layers []layerRecord
	if err := readJSON(filepath.Join(dir, "overlay-layers", "layers.json"), &layers); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	byID := map[string]layerRecord{}
	for _, l := range layers {
		byID[l.ID] = l
	}
	out := make([]Image, 0, len(images))
	for _, rec := range images {
		img := Image{ID: rec.ID, Names: rec.Names, Digest: rec.Digest}
		seen := map[string]bool{}
		for id := rec.TopLayer; id != "" && !seen[id]; id = byID[id].Parent {
			seen[id] = true
			img.Layers = append([]string{id}, img.Layers...)
			img.Size += byID[id].DiffSize
		}
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func readJSON(p string, v any) error {
	data, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("reading embedded store record %s: %w", p, err)
	}
	return nil
}

// Find returns the embedded image that ref (a normalized reference, with a
// tag or a digest) names: by manifest digest for name@digest, else by name.
func Find(images []Image, ref string) (Image, bool) {
	if _, d, ok := strings.Cut(ref, "@"); ok {
		for _, img := range images {
			if img.Digest.String() == d {
				return img, true
			}
		}
		return Image{}, false
	}
	for _, img := range images {
		for _, n := range img.Names {
			if n == ref {
				return img, true
			}
		}
	}
	return Image{}, false
}

// EnsureStore gives tree an empty read-only store at DefaultPath when it has
// nothing there, so that podman configured with DefaultPath as an additional
// image store (contrib/storage/storage.conf) works on every deployment; an
// image that embeds apps keeps its own. An image whose /usr/lib or
// /usr/lib/containers is not a real directory is refused: following a
// symlink would write outside the tree.
func EnsureStore(tree string) error {
	dir := tree
	rel := strings.Split(strings.TrimPrefix(DefaultPath, "/"), "/")
	for i, name := range rel {
		dir = filepath.Join(dir, name)
		fi, err := os.Lstat(dir)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if i == len(rel)-1 {
				return writeEmptyStore(dir)
			}
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
		case err != nil:
			return err
		case !fi.IsDir():
			return fmt.Errorf("the image's /%s is a %s, not a directory", strings.Join(rel[:i+1], "/"), fi.Mode().Type())
		}
	}
	return nil
}

func writeEmptyStore(dir string) error {
	for _, d := range []string{"", "overlay", "overlay-images", "overlay-layers"} {
		mode := os.FileMode(0o700)
		if d == "" {
			mode = 0o755
		}
		if err := os.Mkdir(filepath.Join(dir, d), mode); err != nil {
			return fmt.Errorf("creating the empty embedded store: %w", err)
		}
	}
	for _, f := range []string{"overlay-images/images.lock", "overlay-layers/layers.lock"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			return fmt.Errorf("creating the empty embedded store: %w", err)
		}
	}
	return nil
}
