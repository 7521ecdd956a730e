package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/bootstore/bootstore/pkg/boundimages"
	"github.com/bootstore/bootstore/pkg/embedded"
)

// RoleEmbedded is the role of an image that a kept deployment's OS image
// carries in its embedded store (`image embed`).
const RoleEmbedded = "embedded"

// EmbeddedImages lists the app images that the OS image id carries in its
// embedded store (`image embed`, the path in its embedded.Label label);
// none for an image without that label. The image is mounted read-only.
func (s *Store) EmbeddedImages(ctx context.Context, id string) ([]embedded.Image, error) {
	info, err := s.Inspect(ctx, id)
	if err != nil {
		return nil, err
	}
	storePath := info.Labels[embedded.Label]
	if storePath == "" {
		return nil, nil
	}
	mnt, err := s.s.MountImage(id, []string{"ro"}, "")
	if err != nil {
		return nil, fmt.Errorf("mounting image %s: %w", id, err)
	}
	defer s.s.UnmountImage(id, false)
	imgs, err := embedded.Images(mnt, storePath)
	if err != nil {
		return nil, fmt.Errorf("reading the embedded store of image %s: %w", id, err)
	}
	return imgs, nil
}

// embeddedBound returns the embedded image that stands for the bound image
// b, so that it is not pulled into the unified store a second time: one
// pinned by digest matches by digest; one named by tag matches an embedded
// image of that name when the registry serves the same digest for the tag,
// or cannot be reached (the OS image's own copy is what it was built with).
// A tag that moved since the OS image was built is pulled as usual.
func (s *Store) embeddedBound(ctx context.Context, b boundimages.Image, opts PullOptions, imgs []embedded.Image) (*Pulled, bool) {
	e, ok := embedded.Find(imgs, b.Ref)
	if !ok {
		return nil, false
	}
	if !strings.Contains(b.Ref, "@") {
		ref, err := ParseRegistryReference(b.Ref)
		if err != nil {
			return nil, false
		}
		if d, err := RemoteDigest(ctx, s.systemContext(opts.System), ref); err == nil && d != e.Digest {
			return nil, false
		}
	}
	return &Pulled{Ref: b.Ref, ID: e.ID, Digest: e.Digest, Embedded: true}, true
}
