package embed

import (
	"archive/tar"
	"encoding/base64"
	"encoding/json"
	"io"
	"path"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	"go.podman.io/storage"
)

// ImageDigestBigDataKey and the "manifest-<digest>" keys are
// containers/image's names for an image's manifest; the config is stored
// under its digest.
const manifestKey = storage.ImageDigestBigDataKey

func unixEpoch() time.Time { return time.Unix(0, 0).UTC() }

// storeImage is one image of the embedded store.
type storeImage struct {
	names    []string
	manifest []byte
	mdigest  digest.Digest
	config   []byte
	cdigest  digest.Digest
	created  time.Time
	top      string // top layer ID
}

// bigDataFileName is containers/storage's file name for a big-data item
// (store.go makeBigDataBaseName): the key itself when it is made of
// [0-9a-z.] only, else "=" and its standard base64.
func bigDataFileName(key string) string {
	for _, c := range key {
		if c != '.' && (c < '0' || c > '9') && (c < 'a' || c > 'z') {
			return "=" + base64.StdEncoding.EncodeToString([]byte(key))
		}
	}
	return key
}

// writeMetadataLayer writes the store's records as one tar stream: the
// layers' and images' JSON (in containers/storage's own record types, with
// fixed creation times for layers and sorted keys), the images' big data
// (configs and manifests, byte for byte) and the empty lock files that a
// read-only store must already have, since it cannot create them.
func writeMetadataLayer(w io.Writer, store string, layers []storage.Layer, images []storeImage) error {
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	layersDir := path.Join(store, "overlay-layers")
	imagesDir := path.Join(store, "overlay-images")
	if err := writeDirs(tw, layersDir, dirs); err != nil {
		return err
	}
	data, err := json.Marshal(layers)
	if err != nil {
		return err
	}
	if err := writeFile(tw, path.Join(layersDir, "layers.json"), 0o600, data); err != nil {
		return err
	}
	if err := writeFile(tw, path.Join(layersDir, "layers.lock"), 0o644, nil); err != nil {
		return err
	}
	if err := writeDirs(tw, imagesDir, dirs); err != nil {
		return err
	}
	var records []storage.Image
	slices.SortFunc(images, func(a, b storeImage) int { return compareStrings(a.cdigest.Encoded(), b.cdigest.Encoded()) })
	for _, img := range images {
		id := img.cdigest.Encoded()
		mkey := "manifest-" + img.mdigest.String()
		rec := storage.Image{
			ID:           id,
			Digest:       img.mdigest,
			Names:        img.names,
			TopLayer:     img.top,
			BigDataNames: []string{img.cdigest.String(), mkey, manifestKey},
			BigDataSizes: map[string]int64{
				img.cdigest.String(): int64(len(img.config)),
				mkey:                 int64(len(img.manifest)),
				manifestKey:          int64(len(img.manifest)),
			},
			BigDataDigests: map[string]digest.Digest{
				img.cdigest.String(): img.cdigest,
				mkey:                 img.mdigest,
				manifestKey:          img.mdigest,
			},
			Created: img.created,
		}
		records = append(records, rec)
		dir := path.Join(imagesDir, id)
		if err := writeDirs(tw, dir, dirs); err != nil {
			return err
		}
		for _, f := range []struct {
			key  string
			data []byte
		}{{img.cdigest.String(), img.config}, {manifestKey, img.manifest}, {mkey, img.manifest}} {
			if err := writeFile(tw, path.Join(dir, bigDataFileName(f.key)), 0o600, f.data); err != nil {
				return err
			}
		}
	}
	if data, err = json.Marshal(records); err != nil {
		return err
	}
	if err := writeFile(tw, path.Join(imagesDir, "images.json"), 0o600, data); err != nil {
		return err
	}
	if err := writeFile(tw, path.Join(imagesDir, "images.lock"), 0o644, nil); err != nil {
		return err
	}
	return tw.Close()
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
