package embed

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/image"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/pkg/compression"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/transports"
	"go.podman.io/image/v5/types"
)

// source is one opened image (the base or an app), resolved to the instance
// for this platform, whose signature policy has been checked.
type source struct {
	name     string // transport:reference, for messages
	src      types.ImageSource
	manifest []byte
	mime     string
	digest   digest.Digest // of manifest
	config   []byte
	configD  digest.Digest
	layers   []types.BlobInfo // base first
	diffIDs  []digest.Digest
}

func (s *source) Close() error { return s.src.Close() }

// openSource opens ref, chooses the instance for sys's platform when ref is
// a manifest list, and checks the policy (signatures) before anything of the
// image is used.
func openSource(ctx context.Context, sys *types.SystemContext, pc *signature.PolicyContext, ref types.ImageReference) (_ *source, retErr error) {
	name := transports.ImageName(ref)
	src, err := ref.NewImageSource(ctx, sys)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", name, err)
	}
	defer func() {
		if retErr != nil {
			src.Close()
		}
	}()
	raw, mime, err := src.GetManifest(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("reading the manifest of %s: %w", name, err)
	}
	var instance *digest.Digest
	if manifest.MIMETypeIsMultiImage(mime) {
		list, err := manifest.ListFromBlob(raw, mime)
		if err != nil {
			return nil, fmt.Errorf("reading the manifest list of %s: %w", name, err)
		}
		d, err := list.ChooseInstance(sys)
		if err != nil {
			return nil, fmt.Errorf("choosing an instance of %s: %w", name, err)
		}
		instance = &d
	}
	unparsed := image.UnparsedInstance(src, instance)
	if ok, err := pc.IsRunningImageAllowed(ctx, unparsed); !ok || err != nil {
		return nil, fmt.Errorf("%s is not allowed by the signature policy: %w", name, err)
	}
	img, err := image.FromUnparsedImage(ctx, sys, unparsed)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	s := &source{name: name, src: src}
	if s.manifest, s.mime, err = img.Manifest(ctx); err != nil {
		return nil, fmt.Errorf("reading the manifest of %s: %w", name, err)
	}
	if s.digest, err = manifest.Digest(s.manifest); err != nil {
		return nil, fmt.Errorf("digesting the manifest of %s: %w", name, err)
	}
	if s.config, err = img.ConfigBlob(ctx); err != nil {
		return nil, fmt.Errorf("reading the config of %s: %w", name, err)
	}
	s.configD = img.ConfigInfo().Digest
	s.layers = img.LayerInfos()
	oci, err := img.OCIConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the config of %s: %w", name, err)
	}
	s.diffIDs = oci.RootFS.DiffIDs
	if len(s.diffIDs) != len(s.layers) {
		return nil, fmt.Errorf("%s: its config lists %d DiffIDs for %d layers", name, len(s.diffIDs), len(s.layers))
	}
	for _, l := range s.layers {
		if l.URLs != nil {
			return nil, fmt.Errorf("%s: layer %s is a foreign layer; bootstore embeds only layers it can fetch", name, l.Digest)
		}
	}
	return s, nil
}

// configMap is the image config as a generic JSON object, so that fields
// this code does not know survive (json.Marshal sorts keys: the output is
// deterministic).
func (s *source) configMap() (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(s.config, &m); err != nil {
		return nil, fmt.Errorf("parsing the config of %s: %w", s.name, err)
	}
	return m, nil
}

// blob opens one layer blob, checking its digest as it is read.
func (s *source) blob(ctx context.Context, l types.BlobInfo) (io.ReadCloser, error) {
	rc, _, err := s.src.GetBlob(ctx, l, none.NoCache)
	if err != nil {
		return nil, fmt.Errorf("fetching layer %s of %s: %w", l.Digest, s.name, err)
	}
	return &verifying{rc: rc, d: l.Digest.Algorithm().Digester(), want: l.Digest, what: fmt.Sprintf("layer %s of %s", l.Digest, s.name)}, nil
}

// saveBlob copies one layer blob to path, checking its digest.
func (s *source) saveBlob(ctx context.Context, l types.BlobInfo, path string) error {
	rc, err := s.blob(ctx, l)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		return fmt.Errorf("copying layer %s of %s: %w", l.Digest, s.name, err)
	}
	return f.Close()
}

// decompressed opens an uncompressed tar stream of r, whatever it is
// compressed with; algo is "" for an uncompressed stream.
func decompressed(r io.Reader) (io.ReadCloser, string, error) {
	algo, decompressor, r, err := compression.DetectCompressionFormat(r)
	if err != nil {
		return nil, "", err
	}
	if decompressor == nil {
		return io.NopCloser(r), "", nil
	}
	rc, err := decompressor(r)
	if err != nil {
		return nil, "", err
	}
	return rc, algo.Name(), nil
}

// verifying checks a digest when the stream it wraps reaches EOF.
type verifying struct {
	rc   io.ReadCloser
	d    digest.Digester
	want digest.Digest
	what string
}

func (v *verifying) Read(p []byte) (int, error) {
	n, err := v.rc.Read(p)
	v.d.Hash().Write(p[:n])
	if err == io.EOF && v.d.Digest() != v.want {
		return n, fmt.Errorf("%s: content has digest %s", v.what, v.d.Digest())
	}
	return n, err
}

func (v *verifying) Close() error { return v.rc.Close() }
