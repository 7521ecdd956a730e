package embed

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/manifest"
	ocilayout "go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/types"
	"go.podman.io/storage"
	"go.podman.io/storage/pkg/archive"
)

// layoutTag is the tag of the image in the private OCI layout.
const layoutTag = "embed"

// layout is the OCI image layout the new image is assembled in.
type layout struct {
	dir         string
	compression string
	layers      []imgspecv1.Descriptor
	diffIDs     []digest.Digest // of the layers added after the base's
	history     []string        // created_by of each added layer
}

func newLayout(dir, compression string) (*layout, error) {
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, imgspecv1.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return nil, err
	}
	return &layout{dir: dir, compression: compression}, nil
}

func (l *layout) blobPath(d digest.Digest) string {
	return filepath.Join(l.dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// ociLayerType maps a base layer's media type to its OCI equivalent; the
// blob itself is kept as it is.
func ociLayerType(mt string) (string, error) {
	switch mt {
	case manifest.DockerV2Schema2LayerMediaType:
		return imgspecv1.MediaTypeImageLayerGzip, nil
	case imgspecv1.MediaTypeImageLayer, imgspecv1.MediaTypeImageLayerGzip, imgspecv1.MediaTypeImageLayerZstd:
		return mt, nil
	}
	return "", fmt.Errorf("layer media type %q is not supported", mt)
}

// addBaseLayer copies one base layer blob unchanged and adds its files to
// the scan tree.
func (l *layout) addBaseLayer(ctx context.Context, base *source, info types.BlobInfo, tree *baseTree) error {
	mt, err := ociLayerType(info.MediaType)
	if err != nil {
		return fmt.Errorf("layer %s: %w", info.Digest, err)
	}
	if err := os.MkdirAll(filepath.Dir(l.blobPath(info.Digest)), 0o755); err != nil {
		return err
	}
	p := l.blobPath(info.Digest)
	if _, err := os.Stat(p); err != nil {
		if err := base.saveBlob(ctx, info, p); err != nil {
			return err
		}
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	r, _, err := decompressed(f)
	if err != nil {
		return fmt.Errorf("layer %s: %w", info.Digest, err)
	}
	defer r.Close()
	if err := tree.apply(r, info.Digest.String()); err != nil {
		return err
	}
	l.layers = append(l.layers, imgspecv1.Descriptor{MediaType: mt, Digest: info.Digest, Size: fi.Size(), Annotations: info.Annotations})
	return nil
}

// newBlob writes one new layer: write is given the uncompressed stream;
// the blob is compressed as the layout says and recorded with its DiffID.
func (l *layout) newBlob(write func(io.Writer) error, createdBy string) error {
	tmp, err := os.CreateTemp(l.dir, "blob-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	compressed := digest.Canonical.Digester()
	counter := &countingWriter{}
	cw := io.MultiWriter(tmp, compressed.Hash(), counter)
	var comp io.WriteCloser
	mt := imgspecv1.MediaTypeImageLayerGzip
	switch l.compression {
	case CompressionZstd:
		mt = imgspecv1.MediaTypeImageLayerZstd
		// One encoder goroutine: the output must not depend on scheduling.
		comp, err = zstd.NewWriter(cw, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
		if err != nil {
			return err
		}
	default:
		// No name and no modification time in the header: the bytes
		// depend on the content only.
		comp = gzip.NewWriter(cw)
	}
	uncompressed := digest.Canonical.Digester()
	if err := write(io.MultiWriter(comp, uncompressed.Hash())); err != nil {
		return err
	}
	if err := comp.Close(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	d := compressed.Digest()
	if err := os.Rename(tmp.Name(), l.blobPath(d)); err != nil {
		return err
	}
	l.layers = append(l.layers, imgspecv1.Descriptor{MediaType: mt, Digest: d, Size: counter.n})
	l.diffIDs = append(l.diffIDs, uncompressed.Digest())
	l.history = append(l.history, createdBy)
	return nil
}

// addAppLayer writes the OS layer of one app layer and returns the store's
// record of the layer (without Parent).
func (l *layout) addAppLayer(ctx context.Context, src *source, info types.BlobInfo, diffID digest.Digest, p layerPaths, lowers []string) (*storage.Layer, error) {
	rc, err := src.blob(ctx, info)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	counted := &countingReader{r: rc}
	r, algo, err := decompressed(counted)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var re *rerooted
	err = l.newBlob(func(w io.Writer) error {
		re, err = rerootLayer(w, r, p, lowers)
		return err
	}, fmt.Sprintf("bootstore image embed: %s/overlay/%s (app layer %s)", "/"+p.store, p.id, info.Digest))
	if err != nil {
		return nil, err
	}
	// Read the blob to its end, so its digest is checked and its size known.
	if _, err := io.Copy(io.Discard, counted); err != nil {
		return nil, err
	}
	if re.diffID != diffID {
		return nil, fmt.Errorf("its content has DiffID %s, the config says %s", re.diffID, diffID)
	}
	ct := archive.Uncompressed
	switch algo {
	case "gzip":
		ct = archive.Gzip
	case "zstd", "zstd:chunked":
		ct = archive.Zstd
	case "bzip2":
		ct = archive.Bzip2
	case "xz":
		ct = archive.Xz
	}
	return &storage.Layer{
		ID:                 p.id,
		Created:            epoch,
		CompressedDigest:   info.Digest,
		CompressedSize:     counted.n,
		UncompressedDigest: re.diffID,
		UncompressedSize:   re.diffSize,
		CompressionType:    ct,
		UIDs:               re.uids,
		GIDs:               re.gids,
	}, nil
}

func (l *layout) addMetadataLayer(store string, layers []storage.Layer, images []storeImage) error {
	return l.newBlob(func(w io.Writer) error {
		return writeMetadataLayer(w, store, layers, images)
	}, "bootstore image embed: "+"/"+store+" metadata")
}

// finish writes the config (the base's, extended) and the manifest, and
// tags the manifest in index.json.
func (l *layout) finish(base *source, storePath string) error {
	cfg, err := base.configMap()
	if err != nil {
		return err
	}
	rootfs, _ := cfg["rootfs"].(map[string]any)
	if rootfs == nil {
		return fmt.Errorf("the config of %s has no rootfs", base.name)
	}
	diffIDs, _ := rootfs["diff_ids"].([]any)
	for _, d := range l.diffIDs {
		diffIDs = append(diffIDs, d.String())
	}
	rootfs["diff_ids"] = diffIDs
	history, _ := cfg["history"].([]any)
	for _, h := range l.history {
		history = append(history, map[string]any{"created_by": h, "comment": "bootstore image embed"})
	}
	cfg["history"] = history
	config, _ := cfg["config"].(map[string]any)
	if config == nil {
		config = map[string]any{}
		cfg["config"] = config
	}
	labels, _ := config["Labels"].(map[string]any)
	if labels == nil {
		labels = map[string]any{}
	}
	labels[LabelStore] = storePath
	config["Labels"] = labels
	cfgDesc, err := l.writeJSON(imgspecv1.MediaTypeImageConfig, cfg)
	if err != nil {
		return err
	}
	man := imgspecv1.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: imgspecv1.MediaTypeImageManifest,
		Config: cfgDesc, Layers: l.layers}
	manDesc, err := l.writeJSON(imgspecv1.MediaTypeImageManifest, man)
	if err != nil {
		return err
	}
	manDesc.Annotations = map[string]string{imgspecv1.AnnotationRefName: layoutTag}
	index := imgspecv1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: imgspecv1.MediaTypeImageIndex,
		Manifests: []imgspecv1.Descriptor{manDesc}}
	data, err := json.Marshal(index)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(l.dir, imgspecv1.ImageIndexFile), data, 0o644)
}

func (l *layout) writeJSON(mediaType string, v any) (imgspecv1.Descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return imgspecv1.Descriptor{}, err
	}
	d := digest.FromBytes(data)
	if err := os.WriteFile(l.blobPath(d), data, 0o644); err != nil {
		return imgspecv1.Descriptor{}, err
	}
	return imgspecv1.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}, nil
}

func (l *layout) reference() (types.ImageReference, error) {
	return ocilayout.NewReference(l.dir, layoutTag)
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
