package store

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	imgspecs "github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/types"
)

// writeLayout writes an OCI layout holding one image "x" with the layers
// given, and returns its directory and the layers' descriptors.
func writeLayout(t *testing.T, layers ...[]byte) (string, []types.BlobInfo) {
	t.Helper()
	dir := t.TempDir()
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(mediaType string, data []byte) imgspecv1.Descriptor {
		d := digest.FromBytes(data)
		if err := os.WriteFile(filepath.Join(blobs, d.Encoded()), data, 0o644); err != nil {
			t.Fatal(err)
		}
		return imgspecv1.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
	}
	m := imgspecv1.Manifest{Versioned: imgspecs.Versioned{SchemaVersion: 2}, MediaType: imgspecv1.MediaTypeImageManifest,
		Config: put(imgspecv1.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))}
	var infos []types.BlobInfo
	for _, l := range layers {
		d := put(imgspecv1.MediaTypeImageLayerGzip, l)
		m.Layers = append(m.Layers, d)
		infos = append(infos, types.BlobInfo{Digest: d.Digest, Size: d.Size, MediaType: d.MediaType})
	}
	raw, _ := json.Marshal(m)
	md := put(imgspecv1.MediaTypeImageManifest, raw)
	md.Annotations = map[string]string{imgspecv1.AnnotationRefName: "x"}
	index, _ := json.Marshal(imgspecv1.Index{Versioned: imgspecs.Versioned{SchemaVersion: 2}, Manifests: []imgspecv1.Descriptor{md}})
	os.WriteFile(filepath.Join(dir, "index.json"), index, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	return dir, infos
}

func TestDamagedLayerIsNamed(t *testing.T) {
	ctx := context.Background()
	dir, layers := writeLayout(t, []byte("first layer"), []byte("second layer"))
	ref, err := layout.NewReference(dir, "x")
	if err != nil {
		t.Fatal(err)
	}
	if !localSource(ref) {
		t.Fatalf("%s is not a local source", ref.Transport().Name())
	}
	src, err := ref.NewImageSource(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := damagedLayer(ctx, src, layers); err != nil {
		t.Fatalf("intact layout: %v", err)
	}

	// Damage the second layer in place, as a bad disk or a tampering would.
	path := filepath.Join(dir, "blobs", "sha256", layers[1].Digest.Encoded())
	if err := os.WriteFile(path, []byte("second layeR"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = damagedLayer(ctx, src, layers)
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), layers[1].Digest.String()) ||
		!strings.Contains(err.Error(), digest.FromString("second layeR").String()) {
		t.Fatalf("damaged second layer: got %v", err)
	}
}
