package host

import (
	"context"
	"errors"
	"fmt"

	"go.podman.io/image/v5/types"

	"github.com/bootstore/bootstore/pkg/imageset"
	"github.com/bootstore/bootstore/pkg/store"
	"github.com/bootstore/bootstore/pkg/sysroot"
)

// ErrWrongImageSet: upgrade was given an image set for another image.
var ErrWrongImageSet = errors.New("the image set holds another image")

// source is where an OS image comes from: the image itself, or an image
// set (oci:DIR, oci-archive:FILE written by image save) that holds it and
// its bound images. From a set, everything is read from the set, and the
// store, the host record and the origin name the registry references, so
// the next online upgrade tracks the registry again.
type source struct {
	// ref is what is read.
	ref types.ImageReference
	// name is the registry reference ref is a copy of (nil: ref itself).
	name types.ImageReference
	set  *imageset.Set
}

// openSource opens ref, which may be an image set. Call it with the sysroot
// locked and its scratch directory emptied: an archive is unpacked there.
func openSource(ctx context.Context, sr *sysroot.Sysroot, ref types.ImageReference) (*source, error) {
	if !imageset.IsCandidate(ref) {
		return &source{ref: ref}, nil
	}
	set, err := imageset.Open(ctx, ref, sr.TempDir())
	if errors.Is(err, imageset.ErrNotImageSet) {
		return &source{ref: ref}, nil
	}
	if err != nil {
		return nil, err
	}
	name, err := set.HostName()
	if err != nil {
		set.Close()
		return nil, fmt.Errorf("%s: host image %s: %w", set.Source, set.Host.Ref, err)
	}
	return &source{ref: set.Host.Image, name: name, set: set}, nil
}

func (s *source) Close() {
	if s.set != nil {
		s.set.Close()
	}
}

// known is the reference the image is recorded under.
func (s *source) known() types.ImageReference {
	if s.name != nil {
		return s.name
	}
	return s.ref
}

// pullOptions adds the set's naming and bound-image source to pull.
func (s *source) pullOptions(pull store.PullOptions, skipBound bool) store.HostPullOptions {
	opts := store.HostPullOptions{PullOptions: pull, SkipBoundImages: skipBound}
	if s.set != nil {
		opts.Name = s.name
		opts.BoundSource = s.set.BoundSource
	}
	return opts
}

// origin describes the pulled image for its deployment: by its registry
// reference, and signed only if the policy verified what was read.
func (s *source) origin(ctx context.Context, st *store.Store, host *store.Pulled, bound []*store.Pulled, storage string, sys *types.SystemContext) (sysroot.Origin, error) {
	o, err := NewOrigin(ctx, st, s.known(), host, bound, storage, sys)
	if err != nil || s.set == nil {
		return o, err
	}
	o.Signed = store.PolicyVerifies(sys, s.ref)
	// The registry's digest, so an online upgrade finds nothing new when
	// the registry still serves this image (Save may have recompressed).
	o.ManifestDigest = s.set.Host.SourceDigest.String()
	return o, nil
}

// openUpgradeSet opens the image set an air-gapped upgrade reads, which
// must hold the image the booted deployment tracks.
func openUpgradeSet(ctx context.Context, sr *sysroot.Sysroot, ref types.ImageReference, booted *sysroot.Deployment) (*source, error) {
	src, err := openSource(ctx, sr, ref)
	if err != nil {
		return nil, err
	}
	if src.set == nil {
		return nil, fmt.Errorf("%w: %s", imageset.ErrNotImageSet, store.RefName(ref))
	}
	tracked, err := SourceOf(booted.Origin)
	if err != nil {
		src.Close()
		return nil, err
	}
	if store.RefName(tracked) != store.RefName(src.name) {
		src.Close()
		return nil, fmt.Errorf("%w: %s holds %s, the booted deployment tracks %s (use switch to change images)",
			ErrWrongImageSet, store.RefName(ref), store.RefName(src.name), store.RefName(tracked))
	}
	return src, nil
}
