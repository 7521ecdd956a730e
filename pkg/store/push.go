package store

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/image"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/pkg/compression"
	"go.podman.io/image/v5/signature"
	istorage "go.podman.io/image/v5/storage"
	"go.podman.io/image/v5/transports"
	"go.podman.io/image/v5/types"
)

// Layer formats `image push` writes.
const (
	CompressionGzip        = "gzip"
	CompressionZstd        = "zstd"
	CompressionZstdChunked = "zstd:chunked"
	CompressionEstargz     = "estargz"
)

// Compressions lists the formats PushImage accepts.
var Compressions = []string{CompressionGzip, CompressionZstd, CompressionZstdChunked, CompressionEstargz}

// ErrBadCompression is wrapped by PushImage for an unknown format.
var ErrBadCompression = errors.New("unknown compression format")

// PushOptions configure PushImage.
type PushOptions struct {
	// System carries auth, TLS, registries.conf and the signature policy
	// for both ends.
	System *types.SystemContext
	// Compression is one of Compressions; every layer is written in it.
	Compression string
	// ReportWriter receives containers/image's progress bars (nil: none).
	ReportWriter io.Writer
	// TempDir holds the eStargz layers while they are built ("": the
	// system's temporary directory). It needs room for the image's layers
	// uncompressed plus compressed.
	TempDir string
}

// PushSource resolves the SRC of `image push`: an image of the store s (by
// name, ID or unambiguous ID prefix) when s holds one, else any
// containers/image reference (ParseReference). s may be nil.
func PushSource(s *Store, name string) (types.ImageReference, error) {
	if s != nil {
		id := ""
		if img, err := s.s.Image(name); err == nil {
			id = img.ID
		} else if named, err := reference.ParseNormalizedNamed(name); err == nil {
			if img, err := s.s.Image(reference.TagNameOnly(named).String()); err == nil {
				id = img.ID
			}
		}
		if id != "" {
			ref, err := istorage.Transport.NewStoreReference(s.s, nil, id)
			if err != nil {
				return nil, fmt.Errorf("image %s in the store: %w", name, err)
			}
			return ref, nil
		}
	}
	return ParseReference(name)
}

// PushImage copies src to dest (a registry), writing every layer in
// opts.Compression, and returns the digest of the manifest it pushed.
//
// gzip, zstd and zstd:chunked are containers/image's own compressors
// (forced, so layers already in another format are recompressed).
// containers/image cannot write eStargz, so for estargz every layer is
// rebuilt with estargz.Build into an OCI layout in opts.TempDir, which
// containers/image then pushes as it is. eStargz adds two members to every
// layer's tar stream (the landmark file /.no.prefetch.landmark and the TOC
// /stargz.index.json), so the DiffIDs, the config and the image ID differ
// from src's, and a full pull of such a layer shows those two files.
func PushImage(ctx context.Context, src, dest types.ImageReference, opts PushOptions) (digest.Digest, error) {
	srcName, destName := transports.ImageName(src), transports.ImageName(dest)
	if !IsRegistry(dest) {
		return "", fmt.Errorf("%w %s: image push writes to a registry (docker://)", ErrBadReference, destName)
	}
	sys := opts.System
	if sys == nil {
		sys = &types.SystemContext{}
	}
	policy, err := signature.DefaultPolicy(sys)
	if err != nil {
		return "", fmt.Errorf("loading signature policy: %w", err)
	}
	pc, err := signature.NewPolicyContext(policy)
	if err != nil {
		return "", fmt.Errorf("loading signature policy: %w", err)
	}
	defer pc.Destroy()

	copySrc := src
	copyPC := pc
	destSys := *sys
	copyOpts := &copy.Options{SourceCtx: sys, DestinationCtx: &destSys, ReportWriter: opts.ReportWriter}
	switch opts.Compression {
	case CompressionGzip, CompressionZstd, CompressionZstdChunked:
		algo, err := compression.AlgorithmByName(opts.Compression)
		if err != nil {
			return "", fmt.Errorf("%w %q: %v", ErrBadCompression, opts.Compression, err)
		}
		destSys.CompressionFormat = &algo
		copyOpts.ForceCompressionFormat = true
	case CompressionEstargz:
		dir, err := os.MkdirTemp(opts.TempDir, "bootstore-estargz-")
		if err != nil {
			return "", fmt.Errorf("pushing %s as eStargz: %w", srcName, err)
		}
		defer os.RemoveAll(dir)
		if err := buildEstargzLayout(ctx, sys, pc, src, dir); err != nil {
			return "", fmt.Errorf("pushing %s as eStargz: %w", srcName, err)
		}
		if copySrc, err = layout.NewReference(dir, "latest"); err != nil {
			return "", err
		}
		// The source's policy was checked by buildEstargzLayout; the
		// layout is bootstore's own scratch copy of it.
		accept, err := signature.NewPolicyContext(&signature.Policy{
			Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()}})
		if err != nil {
			return "", err
		}
		defer accept.Destroy()
		copyPC = accept
		copyOpts.SourceCtx = &types.SystemContext{}
	default:
		return "", fmt.Errorf("%w %q: want one of gzip, zstd, zstd:chunked, estargz", ErrBadCompression, opts.Compression)
	}
	mf, err := copy.Image(ctx, copyPC, dest, copySrc, copyOpts)
	if err != nil {
		return "", fmt.Errorf("pushing %s to %s: %w", srcName, destName, err)
	}
	d, err := manifest.Digest(mf)
	if err != nil {
		return "", fmt.Errorf("pushing %s to %s: %w", srcName, destName, err)
	}
	return d, nil
}

// buildEstargzLayout writes src into an OCI layout at dir, tagged latest,
// with every layer rebuilt as eStargz.
func buildEstargzLayout(ctx context.Context, sys *types.SystemContext, pc *signature.PolicyContext, ref types.ImageReference, dir string) error {
	raw, err := ref.NewImageSource(ctx, sys)
	if err != nil {
		return err
	}
	defer raw.Close()
	unparsed := image.UnparsedInstance(raw, nil)
	if allowed, err := pc.IsRunningImageAllowed(ctx, unparsed); err != nil {
		return fmt.Errorf("the signature policy refuses it: %w", err)
	} else if !allowed {
		return errors.New("the signature policy refuses it")
	}
	img, err := image.FromUnparsedImage(ctx, sys, unparsed)
	if err != nil {
		return err
	}
	cfg, err := img.OCIConfig(ctx)
	if err != nil {
		return fmt.Errorf("reading its configuration: %w", err)
	}
	layers := img.LayerInfos()
	if forCopy, err := raw.LayerInfosForCopy(ctx, nil); err == nil && len(forCopy) == len(layers) {
		layers = forCopy // the store serves its layers uncompressed, under their DiffIDs
	}
	if len(cfg.RootFS.DiffIDs) != len(layers) {
		return fmt.Errorf("its config lists %d layers, its manifest %d", len(cfg.RootFS.DiffIDs), len(layers))
	}
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o700); err != nil {
		return err
	}
	mf := imgspecv1.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: imgspecv1.MediaTypeImageManifest}
	for i, l := range layers {
		desc, diffID, err := estargzLayer(ctx, raw, l, cfg.RootFS.DiffIDs[i], blobs)
		if err != nil {
			return fmt.Errorf("layer %d (%s): %w", i, l.Digest, err)
		}
		mf.Layers = append(mf.Layers, desc)
		cfg.RootFS.DiffIDs[i] = diffID
	}
	cfgDesc, err := writeJSONBlob(blobs, imgspecv1.MediaTypeImageConfig, cfg)
	if err != nil {
		return err
	}
	mf.Config = cfgDesc
	mfDesc, err := writeJSONBlob(blobs, imgspecv1.MediaTypeImageManifest, mf)
	if err != nil {
		return err
	}
	mfDesc.Annotations = map[string]string{imgspecv1.AnnotationRefName: "latest"}
	idx := imgspecv1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: imgspecv1.MediaTypeImageIndex,
		Manifests: []imgspecv1.Descriptor{mfDesc}}
	if _, err := writeJSONFile(filepath.Join(dir, imgspecv1.ImageIndexFile), idx); err != nil {
		return err
	}
	_, err = writeJSONFile(filepath.Join(dir, imgspecv1.ImageLayoutFile), imgspecv1.ImageLayout{Version: imgspecv1.ImageLayoutVersion})
	return err
}

// estargzLayer reads layer l of src, checks it against its DiffID, and
// writes it as an eStargz blob into blobs. It returns the blob's
// descriptor, with the TOC digest and uncompressed size annotations that
// containers/storage (and stargz snapshotters) look for, and its DiffID.
func estargzLayer(ctx context.Context, src types.ImageSource, l types.BlobInfo, diffID digest.Digest, blobs string) (imgspecv1.Descriptor, digest.Digest, error) {
	var none imgspecv1.Descriptor
	stream, _, err := src.GetBlob(ctx, l, nil)
	if err != nil {
		return none, "", err
	}
	defer stream.Close()
	tarStream, _, err := compression.AutoDecompress(stream)
	if err != nil {
		return none, "", err
	}
	defer tarStream.Close()
	tarFile, err := os.CreateTemp(blobs, ".tar-")
	if err != nil {
		return none, "", err
	}
	defer os.Remove(tarFile.Name())
	defer tarFile.Close()
	digester := digest.Canonical.Digester()
	size, err := io.Copy(io.MultiWriter(tarFile, digester.Hash()), tarStream)
	if err != nil {
		return none, "", err
	}
	if digester.Digest() != diffID {
		return none, "", fmt.Errorf("its content has digest %s, its config says %s", digester.Digest(), diffID)
	}
	blob, err := estargz.Build(io.NewSectionReader(tarFile, 0, size),
		estargz.WithContext(ctx), estargz.WithCompressionLevel(gzip.DefaultCompression))
	if err != nil {
		return none, "", fmt.Errorf("building eStargz: %w", err)
	}
	defer blob.Close()
	out, err := os.CreateTemp(blobs, ".esgz-")
	if err != nil {
		return none, "", err
	}
	defer os.Remove(out.Name()) // a no-op once renamed
	defer out.Close()
	blobDigester := digest.Canonical.Digester()
	n, err := io.Copy(io.MultiWriter(out, blobDigester.Hash()), blob)
	if err != nil {
		return none, "", fmt.Errorf("building eStargz: %w", err)
	}
	if err := out.Close(); err != nil {
		return none, "", err
	}
	uncompressed, err := blob.UncompressedSize()
	if err != nil {
		return none, "", err
	}
	d := blobDigester.Digest()
	if err := os.Rename(out.Name(), filepath.Join(blobs, d.Encoded())); err != nil {
		return none, "", err
	}
	return imgspecv1.Descriptor{
		MediaType: imgspecv1.MediaTypeImageLayerGzip, Digest: d, Size: n,
		Annotations: map[string]string{
			estargz.TOCJSONDigestAnnotation:         blob.TOCDigest().String(),
			estargz.StoreUncompressedSizeAnnotation: strconv.FormatInt(uncompressed, 10),
		},
	}, blob.DiffID(), nil
}

func writeJSONBlob(blobs, mediaType string, v any) (imgspecv1.Descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return imgspecv1.Descriptor{}, err
	}
	d := digest.FromBytes(data)
	if _, err := writeJSONFile(filepath.Join(blobs, d.Encoded()), json.RawMessage(data)); err != nil {
		return imgspecv1.Descriptor{}, err
	}
	return imgspecv1.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}, nil
}

func writeJSONFile(path string, v any) (int, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	return len(data), os.WriteFile(path, data, 0o600)
}
