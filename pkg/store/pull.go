package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/image"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/signature"
	istorage "go.podman.io/image/v5/storage"
	"go.podman.io/image/v5/transports"
	"go.podman.io/image/v5/types"
	"go.podman.io/storage"

	"github.com/bootstore/bootstore/pkg/progress"
)

// Typed errors the CLI maps to clear messages; match them with errors.Is.
var (
	ErrNotBootable       = errors.New("image is not bootable")
	ErrInsufficientSpace = errors.New("insufficient free space")
	// ErrDigestMismatch: a source served content other than the digest
	// asked for.
	ErrDigestMismatch = errors.New("digest mismatch")
)

// Bootable labels: bootc's and ostree's.
var bootableLabels = []string{"containers.bootc", "ostree.bootable"}

// PullOptions are the knobs shared by every pull: OS images and bound
// images go through the same path and differ only in these.
type PullOptions struct {
	// System carries auth, TLS, registries.conf and signature policy
	// settings; the store adds its temporary directory.
	System *types.SystemContext
	// RequireBootable refuses an image without a bootable label.
	RequireBootable bool
	// ReportWriter receives containers/image's progress bars (nil: none).
	ReportWriter io.Writer
	// Progress receives machine-readable progress (nil: none).
	Progress progress.Sink
	// Name is the reference the image is known by when the source is a
	// copy of it (an image set's OCI layout): the store names the image
	// after Name and Pulled.Ref reports it, so later pulls from the
	// registry find it. nil means the source itself.
	Name types.ImageReference
}

// Pulled describes one image after a pull.
type Pulled struct {
	// Ref is the reference pulled from, as the user gave it.
	Ref string
	// ID is the store's image ID (the config digest's hex).
	ID string
	// Digest is the manifest digest the source served.
	Digest digest.Digest
	// Fetched is false when the store already had this manifest and nothing
	// was copied.
	Fetched bool
	// Embedded is set for a bound image that the OS image carries in its
	// embedded store: it was not pulled, and ID is the embedded image's.
	Embedded bool
}

// PullImage brings src into the store unless the store already holds the
// manifest the source serves now, in which case only the name is updated.
// A tag is resolved to a digest once, and that digest is what is copied, so
// the checks made before the copy hold for what lands.
//
// A pull from a registry that fails on a broken connection (a mirror or
// cache dying mid-transfer) is retried from the start, up to twice: the
// failed attempt left no layer, and the new attempt picks its source again
// (registries.conf mirrors in order, then the registry itself).
func (s *Store) PullImage(ctx context.Context, src types.ImageReference, opts PullOptions) (*Pulled, error) {
	for attempt := 0; ; attempt++ {
		p, err := s.pullImage(ctx, src, opts)
		if err == nil || attempt == pullRetries || !IsRegistry(src) || !brokenConnection(err) || ctx.Err() != nil {
			return p, err
		}
		fmt.Fprintf(s.opts.Warn, "Retrying %s after a broken connection: %v\n", transports.ImageName(src), err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Second):
		}
	}
}

// pullRetries is how often a pull is retried after a broken connection.
const pullRetries = 2

// brokenConnection reports whether err is a connection that broke or was
// refused, as opposed to an answer (an HTTP error, a digest mismatch).
func brokenConnection(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}

func (s *Store) pullImage(ctx context.Context, src types.ImageReference, opts PullOptions) (*Pulled, error) {
	known := src
	if opts.Name != nil {
		known = opts.Name
	}
	name := transports.ImageName(known)
	sys := s.systemContext(opts.System)
	named, err := storeName(known)
	if err != nil {
		return nil, err
	}
	what := name // the source, for messages
	if opts.Name != nil {
		what = name + " from " + transports.ImageName(src)
	}
	remote, dgst, err := openRemote(ctx, sys, src)
	if err != nil {
		return nil, err
	}
	defer remote.Close()
	if img, err := s.imageWithDigest(dgst); err == nil {
		if opts.RequireBootable {
			if err := s.checkBootable(ctx, name, img.ID); err != nil {
				return nil, err
			}
		}
		if err := s.s.AddNames(img.ID, []string{named.String()}); err != nil {
			return nil, fmt.Errorf("naming %s as %s: %w", img.ID, named, err)
		}
		return &Pulled{Ref: name, ID: img.ID, Digest: dgst, Fetched: false}, nil
	}

	s.notePartialPullsOff()
	pinned := PinDigest(src, dgst)
	layers, err := s.preflight(ctx, sys, remote, what, opts.RequireBootable)
	if err != nil {
		return nil, err
	}
	dest, err := istorage.Transport.NewStoreReference(partialGuard{s.s}, named, "")
	if err != nil {
		return nil, fmt.Errorf("naming %s in the store: %w", named, err)
	}
	policy, err := signature.DefaultPolicy(sys)
	if err != nil {
		return nil, fmt.Errorf("loading signature policy: %w", err)
	}
	pc, err := signature.NewPolicyContext(policy)
	if err != nil {
		return nil, fmt.Errorf("loading signature policy: %w", err)
	}
	defer pc.Destroy()

	sink := opts.Progress
	if sink == nil {
		sink = progress.Discard()
	}
	ch, finish := sink.BeginImage(name, layers)
	before, _ := s.layerIDs()
	_, err = copy.Image(ctx, pc, dest, pinned, &copy.Options{
		SourceCtx:        sys,
		DestinationCtx:   sys,
		ReportWriter:     opts.ReportWriter,
		Progress:         ch,
		ProgressInterval: 250 * time.Millisecond,
	})
	finish(err)
	if err != nil {
		s.removeNewOrphanLayers(before)
		if localSource(src) {
			if damaged := damagedLayer(ctx, remote, layers); damaged != nil {
				return nil, fmt.Errorf("pulling %s: %w (the copy said: %v)", what, damaged, err)
			}
		}
		return nil, fmt.Errorf("pulling %s: %w", what, err)
	}
	img, err := istorage.Transport.GetStoreImage(s.s, dest)
	if err != nil {
		return nil, fmt.Errorf("finding %s in the store after the pull: %w", name, err)
	}
	if opts.RequireBootable {
		// The preflight read the same config; this guards the case where the
		// source changed between the two reads of a digest-less transport.
		if err := s.checkBootable(ctx, name, img.ID); err != nil {
			s.removeImage(img.ID, before)
			return nil, err
		}
	}
	return &Pulled{Ref: name, ID: img.ID, Digest: dgst, Fetched: true}, nil
}

// systemContext returns a copy of sys that keeps big temporary files in the
// sysroot's scratch directory, which is emptied after crashes.
func (s *Store) systemContext(sys *types.SystemContext) *types.SystemContext {
	out := &types.SystemContext{}
	if sys != nil {
		*out = *sys
	}
	if s.opts.TempDir != "" {
		out.BigFilesTemporaryDir = s.opts.TempDir
	}
	return out
}

// openRemote opens ref and reads the digest of the manifest it serves now
// (for a registry: one manifest request, no blob). The source keeps that
// manifest, so reading the image through it again (preflight, RemoteInfo)
// sees exactly the digested manifest without asking the registry again.
// The caller closes the source.
func openRemote(ctx context.Context, sys *types.SystemContext, ref types.ImageReference) (types.ImageSource, digest.Digest, error) {
	name := transports.ImageName(ref)
	src, err := ref.NewImageSource(ctx, sys)
	if err != nil {
		return nil, "", fmt.Errorf("reading manifest of %s: %w", name, err)
	}
	raw, _, err := src.GetManifest(ctx, nil)
	if err == nil {
		var dgst digest.Digest
		if dgst, err = manifest.Digest(raw); err == nil {
			// GetManifest does not verify; a mirror (or a proxy) may serve
			// another manifest for a name by digest. Refuse it here, before
			// the store is searched for what was served.
			if want, ok := ref.DockerReference().(reference.Digested); ok && want.Digest() != dgst {
				err = fmt.Errorf("%w: the registry served manifest %s, not the digest the reference names (a mirror or cache serving other content?)", ErrDigestMismatch, dgst)
			} else {
				return src, dgst, nil
			}
		}
	}
	src.Close()
	return nil, "", fmt.Errorf("reading manifest of %s: %w", name, err)
}

// PinDigest turns a tagged registry reference into one by digest; other
// references are returned as they are.
func PinDigest(ref types.ImageReference, dgst digest.Digest) types.ImageReference {
	named := ref.DockerReference()
	if !IsRegistry(ref) || named == nil {
		return ref
	}
	if _, ok := named.(reference.Digested); ok {
		return ref
	}
	d, err := reference.WithDigest(reference.TrimNamed(named), dgst)
	if err != nil {
		return ref
	}
	pinned, err := docker.NewReference(d)
	if err != nil {
		return ref
	}
	return pinned
}

// imageWithDigest finds an image whose manifest (or manifest list) has dgst.
func (s *Store) imageWithDigest(dgst digest.Digest) (*storage.Image, error) {
	imgs, err := s.s.ImagesByDigest(dgst)
	if err != nil {
		return nil, err
	}
	if len(imgs) == 0 {
		return nil, storage.ErrImageUnknown
	}
	return imgs[0], nil
}

// preflight reads the manifest and config of the open source (no layer)
// and refuses the pull before anything is fetched when the image is not
// bootable or the layers the store lacks are larger than the free space. It
// returns the layers.
func (s *Store) preflight(ctx context.Context, sys *types.SystemContext, src types.ImageSource, name string, requireBootable bool) ([]types.BlobInfo, error) {
	img, err := image.FromUnparsedImage(ctx, sys, image.UnparsedInstance(src, nil))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	layers := img.LayerInfos()
	if requireBootable {
		info, err := img.Inspect(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading the configuration of %s: %w", name, err)
		}
		if !isBootable(info.Labels) {
			return nil, notBootable(name)
		}
	}
	need := img.ConfigInfo().Size
	for _, l := range layers {
		if l.Size > 0 && !s.hasBlob(l) {
			need += l.Size
		}
	}
	if err := checkFree(s.opts.GraphRoot, need, name); err != nil {
		return nil, err
	}
	return layers, nil
}

func (s *Store) hasLayer(d digest.Digest) bool {
	if ls, err := s.s.LayersByCompressedDigest(d); err == nil && len(ls) > 0 {
		return true
	}
	ls, err := s.s.LayersByUncompressedDigest(d)
	return err == nil && len(ls) > 0
}

func isBootable(labels map[string]string) bool {
	for _, l := range bootableLabels {
		if v := labels[l]; v == "1" || v == "true" {
			return true
		}
	}
	return false
}

func notBootable(name string) error {
	return fmt.Errorf("%w: %s has neither the label containers.bootc=1 nor ostree.bootable=1 (pass --allow-non-bootable to pull it anyway)", ErrNotBootable, name)
}

// checkBootable reads the labels of an image already in the store.
func (s *Store) checkBootable(ctx context.Context, name, id string) error {
	info, err := s.Inspect(ctx, id)
	if err != nil {
		return err
	}
	if !isBootable(info.Labels) {
		return notBootable(name)
	}
	return nil
}

// Inspect returns the configuration (labels, creation time, architecture)
// of an image in the store.
func (s *Store) Inspect(ctx context.Context, id string) (*types.ImageInspectInfo, error) {
	ref, err := istorage.Transport.NewStoreReference(s.s, nil, id)
	if err != nil {
		return nil, err
	}
	img, err := ref.NewImage(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("opening image %s: %w", id, err)
	}
	defer img.Close()
	info, err := img.Inspect(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the configuration of image %s: %w", id, err)
	}
	return info, nil
}

// PolicyVerifies reports whether the signature policy that applies to ref
// demands more than insecureAcceptAnything, i.e. whether a successful pull
// of ref was verified. Scopes are looked up as containers/image does: the
// reference's identity, then its namespaces, then the transport's default,
// then the global default.
func PolicyVerifies(sys *types.SystemContext, ref types.ImageReference) bool {
	policy, err := signature.DefaultPolicy(sys)
	if err != nil {
		return false
	}
	reqs := policy.Default
	if scopes, ok := policy.Transports[ref.Transport().Name()]; ok {
		found := false
		for _, scope := range append([]string{ref.PolicyConfigurationIdentity()}, ref.PolicyConfigurationNamespaces()...) {
			if r, ok := scopes[scope]; ok {
				reqs, found = r, true
				break
			}
		}
		if r, ok := scopes[""]; ok && !found {
			reqs = r
		}
	}
	for _, r := range reqs {
		// The requirement types are unexported; their JSON form is stable.
		data, err := json.Marshal(r)
		if err != nil || !strings.Contains(string(data), `"insecureAcceptAnything"`) {
			return true
		}
	}
	return false
}

// HasImage reports whether the store holds an image with this ID.
func (s *Store) HasImage(id string) bool {
	_, err := s.s.Image(id)
	return err == nil
}

// RemoteDigest reads the digest of the manifest ref serves now (for a
// registry, one manifest request).
func RemoteDigest(ctx context.Context, sys *types.SystemContext, ref types.ImageReference) (digest.Digest, error) {
	src, d, err := openRemote(ctx, sys, ref)
	if err != nil {
		return "", err
	}
	src.Close()
	return d, nil
}

// RemoteImage is what a source says about an image without a layer fetched.
type RemoteImage struct {
	Digest       digest.Digest
	Labels       map[string]string
	Architecture string
	// Created is RFC 3339, or "" when the config has none.
	Created string
}

// RemoteInfo reads the manifest digest and the config of ref: no layer is
// fetched.
func RemoteInfo(ctx context.Context, sys *types.SystemContext, ref types.ImageReference) (*RemoteImage, error) {
	name := transports.ImageName(ref)
	src, d, err := openRemote(ctx, sys, ref)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	img, err := image.FromUnparsedImage(ctx, sys, image.UnparsedInstance(src, nil))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	info, err := img.Inspect(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the configuration of %s: %w", name, err)
	}
	r := &RemoteImage{Digest: d, Labels: info.Labels, Architecture: info.Architecture}
	if info.Created != nil {
		r.Created = info.Created.UTC().Format("2006-01-02T15:04:05Z")
	}
	return r, nil
}

// AddName gives image id the store name of ref (which moves it from any
// other image that had it).
func (s *Store) AddName(id string, ref types.ImageReference) error {
	named, err := storeName(ref)
	if err != nil {
		return err
	}
	if err := s.s.AddNames(id, []string{named.String()}); err != nil {
		return fmt.Errorf("naming image %s %s: %w", id, named, err)
	}
	return nil
}
