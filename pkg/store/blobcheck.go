package store

import (
	"context"
	"fmt"

	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/types"
)

// A copy that fails on a damaged layer from a file source (an image set,
// an OCI layout or archive) often fails in the decompressor, which names
// neither the layer nor the file ("gzip: invalid checksum"): the digest is
// only checked at the end of the stream. For such sources, re-reading the
// layers to name the damaged one costs only local reads.

// localSource reports whether ref's blobs are files on this machine.
func localSource(ref types.ImageReference) bool {
	switch ref.Transport().Name() {
	case "oci", "oci-archive", "dir", "docker-archive":
		return true
	}
	return false
}

// damagedLayer returns an ErrDigestMismatch naming the first of layers
// whose content in src does not hash to its digest, or nil when all do.
func damagedLayer(ctx context.Context, src types.ImageSource, layers []types.BlobInfo) error {
	for _, l := range layers {
		if err := l.Digest.Validate(); err != nil {
			return fmt.Errorf("%w: layer %q: %v", ErrDigestMismatch, l.Digest, err)
		}
		rc, _, err := src.GetBlob(ctx, l, none.NoCache)
		if err != nil {
			return fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		got, err := l.Digest.Algorithm().FromReader(rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("reading layer %s: %w", l.Digest, err)
		}
		if got != l.Digest {
			return fmt.Errorf("%w: layer %s is damaged: its content hashes to %s", ErrDigestMismatch, l.Digest, got)
		}
	}
	return nil
}
