package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"go.podman.io/image/v5/transports"
	"go.podman.io/image/v5/types"
	"golang.org/x/sync/errgroup"

	"github.com/bootstore/bootstore/pkg/boundimages"
	"github.com/bootstore/bootstore/pkg/embedded"
	"github.com/bootstore/bootstore/pkg/progress"
)

// HostKey names the big-data item that marks an image pulled as an OS image
// and records the bound images it resolved to at pull time, by image ID.
// Readers match consumers by ID, never by name, so retagging cannot fool
// them.
const HostKey = "bootstore.host.v1"

// HostRecord is the HostKey item.
type HostRecord struct {
	// Ref is the reference the OS image was last pulled from.
	Ref string `json:"ref"`
	// BoundImages is nil when the bound images were never pulled
	// (--bound-images skip).
	BoundImages []BoundImage `json:"boundImages"`
}

// BoundImage is one bound image of a HostRecord.
type BoundImage struct {
	Ref      string `json:"ref"`
	ID       string `json:"id"`
	Digest   string `json:"digest"`
	Entry    string `json:"entry"`
	AuthFile string `json:"authFile,omitempty"`
	// Embedded says the OS image carries it in its embedded store, so it
	// was not pulled into the unified store.
	Embedded bool `json:"embedded,omitempty"`
}

// HostPullOptions extend PullOptions for an OS image.
type HostPullOptions struct {
	PullOptions
	// SkipBoundImages leaves the bound images alone (--bound-images skip).
	SkipBoundImages bool
	// Jobs bounds how many bound images are pulled at once (<=0: 3).
	Jobs int
	// BoundSource, when set, says where to pull a bound image from instead
	// of its registry (an image set's OCI layout); the image is still named
	// and recorded by its registry reference.
	BoundSource func(boundimages.Image) (types.ImageReference, error)
	// Embedded are the images the OS image embeds (EmbeddedImages): a bound
	// image among them is not pulled.
	Embedded []embedded.Image
}

// HostPull is the result of pulling an OS image and its bound images.
type HostPull struct {
	Host  *Pulled
	Bound []*Pulled
}

// PullHost pulls an OS image, then every bound image it names, into the
// store, and records which image IDs the OS image binds.
func (s *Store) PullHost(ctx context.Context, src types.ImageReference, opts HostPullOptions) (*HostPull, error) {
	host, err := s.PullImage(ctx, src, opts.PullOptions)
	if err != nil {
		return nil, err
	}
	res := &HostPull{Host: host}
	rec, _, err := s.HostRecordOf(host.ID)
	if err != nil {
		return nil, err
	}
	rec.Ref = host.Ref
	if !opts.SkipBoundImages {
		bound, err := s.DiscoverBound(host.ID)
		if err != nil {
			return nil, fmt.Errorf("reading the bound images of %s: %w", host.Ref, err)
		}
		if opts.Embedded, err = s.EmbeddedImages(ctx, host.ID); err != nil {
			return nil, err
		}
		res.Bound, err = s.pullBoundOf(ctx, host, bound, opts)
		if err != nil {
			return nil, err
		}
		rec.BoundImages = make([]BoundImage, len(bound))
		for i, b := range bound {
			rec.BoundImages[i] = BoundImage{Ref: b.Ref, ID: res.Bound[i].ID, Digest: res.Bound[i].Digest.String(), Entry: b.Entry, AuthFile: b.AuthFile,
				Embedded: res.Bound[i].Embedded}
		}
	}
	if err := s.writeHostRecord(host.ID, rec); err != nil {
		return nil, err
	}
	return res, nil
}

// pullBoundOf pulls the bound images of host. From an image set (a
// BoundSource), whose failures are not transient, every source is resolved
// before anything is pulled. A failure (a missing or refused bound image, a
// damaged set) removes the images this pull fetched, the host image
// included: a host image is only kept with all its bound images.
func (s *Store) pullBoundOf(ctx context.Context, host *Pulled, bound []boundimages.Image, opts HostPullOptions) ([]*Pulled, error) {
	var errs []error
	for _, b := range bound {
		if opts.BoundSource == nil {
			break
		}
		if _, err := opts.BoundSource(b); err != nil {
			errs = append(errs, fmt.Errorf("bound image %s (from %s): %w", b.Ref, b.Entry, err))
		}
	}
	err := errors.Join(errs...)
	var pulled []*Pulled
	if err == nil {
		pulled, err = s.PullBound(ctx, host.Ref, bound, opts)
	}
	if err != nil {
		for _, p := range append(pulled, host) {
			if p != nil && p.Fetched {
				s.RemoveImage(p.ID)
			}
		}
		return nil, err
	}
	return pulled, nil
}

// DiscoverBound mounts an image read-only and reads its bound-images.d.
func (s *Store) DiscoverBound(id string) ([]boundimages.Image, error) {
	mnt, err := s.s.MountImage(id, []string{"ro"}, "")
	if err != nil {
		return nil, fmt.Errorf("mounting image %s: %w", id, err)
	}
	defer s.s.UnmountImage(id, false)
	return boundimages.Discover(mnt)
}

// PullBound pulls the bound images of the host image hostRef concurrently
// (bounded) and returns them in the order given. Every failure is reported,
// each naming its image; the images pulled are returned with the error
// (nil for the failed ones).
func (s *Store) PullBound(ctx context.Context, hostRef string, bound []boundimages.Image, opts HostPullOptions) ([]*Pulled, error) {
	jobs := opts.Jobs
	if jobs <= 0 {
		jobs = 3
	}
	sink := opts.Progress
	if sink == nil {
		sink = progress.Discard()
	}
	total := uint64(len(bound))
	var mu sync.Mutex
	var done uint64
	steps := make([]progress.SubTaskStep, len(bound))
	for i, b := range bound {
		steps[i] = progress.SubTaskStep{Subtask: "bound-image", Description: "Bound image: " + b.Ref, ID: b.Ref}
	}
	report := func() {
		sink.Steps("bound-images", "Pulling bound images", hostRef, done, total, append([]progress.SubTaskStep(nil), steps...))
	}
	report()

	out := make([]*Pulled, len(bound))
	errs := make([]error, len(bound))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for i, b := range bound {
		g.Go(func() error {
			p, ok := s.embeddedBound(gctx, b, opts.PullOptions, opts.Embedded)
			var err error
			if !ok {
				p, err = s.pullOneBound(gctx, b, opts)
			}
			mu.Lock()
			defer mu.Unlock()
			out[i], errs[i] = p, err
			if err == nil {
				done++
				steps[i].Completed = true
				report()
			}
			return nil // keep pulling the others: report every failure at once
		})
	}
	g.Wait()
	// On failure, out still lists what was pulled, for callers that undo.
	return out, errors.Join(errs...)
}

func (s *Store) pullOneBound(ctx context.Context, b boundimages.Image, host HostPullOptions) (*Pulled, error) {
	ref, err := ParseRegistryReference(b.Ref)
	if err != nil {
		return nil, fmt.Errorf("bound image %s (from %s): %w", b.Ref, b.Entry, err)
	}
	base := host.PullOptions
	opts := base
	opts.RequireBootable = false
	opts.Name = nil
	src := ref
	if host.BoundSource != nil {
		if src, err = host.BoundSource(b); err != nil {
			return nil, fmt.Errorf("bound image %s (from %s): %w", b.Ref, b.Entry, err)
		}
		opts.Name = ref
	}
	if b.AuthFile != "" {
		sys := *s.systemContext(base.System)
		sys.AuthFilePath = b.AuthFile
		opts.System = &sys
	}
	p, err := s.PullImage(ctx, src, opts)
	if err != nil {
		return nil, fmt.Errorf("bound image %s (from %s): %w", b.Ref, b.Entry, err)
	}
	p.Ref = b.Ref
	return p, nil
}

func (s *Store) writeHostRecord(id string, rec HostRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := s.s.SetImageBigData(id, HostKey, data, nil); err != nil {
		return fmt.Errorf("recording image %s as a host image: %w", id, err)
	}
	return nil
}

// HostRecordOf returns what was recorded when an image was pulled as an OS
// image; ok is false for images never pulled as one.
func (s *Store) HostRecordOf(id string) (rec HostRecord, ok bool, err error) {
	data, err := s.s.ImageBigData(id, HostKey)
	if err != nil {
		return rec, false, nil
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return rec, false, fmt.Errorf("reading %s of image %s: %w", HostKey, id, err)
	}
	return rec, true, nil
}

// RefName renders a reference for messages.
func RefName(ref types.ImageReference) string { return transports.ImageName(ref) }
