// Package imageset reads and writes image sets: one OCI image layout (a
// directory, oci:DIR, or its tarball, oci-archive:FILE) that holds an OS
// image and every logically bound image it names, so a host can be
// installed or upgraded where no registry is reachable.
//
// Lifecycle: Save copies the OS image from its source (usually a registry)
// into a new layout, reads the image's bound-images.d through a temporary
// store, copies every bound image into the same layout (blobs shared by
// several images are stored once, the layout being content-addressed), and
// annotates the index; only a complete set is renamed into place. Open
// reads a set (unpacking an archive once into a scratch directory) and
// checks every manifest against its digest; the pull code then takes the OS
// image from Set.Host and each bound image from Set.BoundSource, naming and
// recording them by their registry references, so that a host installed
// from a set upgrades from the registry later. Close removes the scratch
// copy.
//
// The index (index.json) has one manifest descriptor per image, annotated:
//
//	org.opencontainers.image.ref.name   the registry reference, e.g. quay.io/org/os:1
//	org.bootstore.image.reference       the same, for readers that rewrite ref.name
//	org.bootstore.image.role            "host" (exactly one) or "bound"
//	org.bootstore.image.source-digest   the manifest digest the source served
//
// source-digest differs from the descriptor's digest only when Save
// recompressed the layers (--compression-format).
package imageset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/oci/archive"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/types"
	starchive "go.podman.io/storage/pkg/archive"

	"github.com/bootstore/bootstore/pkg/boundimages"
	"github.com/bootstore/bootstore/pkg/store"
)

// Annotations of an image set's index entries.
const (
	AnnotationRole         = "org.bootstore.image.role"
	AnnotationReference    = "org.bootstore.image.reference"
	AnnotationSourceDigest = "org.bootstore.image.source-digest"
)

// Roles of the images in a set.
const (
	RoleHost  = "host"
	RoleBound = "bound"
)

// Errors callers test with errors.Is.
var (
	// ErrNotImageSet: the layout has no image annotated as the host image.
	ErrNotImageSet = errors.New("not a bootstore image set")
	// ErrInvalid: the set is damaged (truncated, tampered, incomplete).
	ErrInvalid = errors.New("invalid image set")
)

// Entry is one image of a set.
type Entry struct {
	Role string
	// Ref is the image's registry reference, normalized (ref.name).
	Ref string
	// Digest is the digest of the manifest stored in the layout.
	Digest digest.Digest
	// SourceDigest is the digest of the manifest the source served.
	SourceDigest digest.Digest
	// Image reads the image from the layout.
	Image types.ImageReference
}

// Set is an open image set.
type Set struct {
	// Source is the set as the user named it, for messages.
	Source string
	// Dir is the OCI layout (the scratch copy for an archive).
	Dir     string
	Host    Entry
	bound   map[string]Entry
	scratch string
}

// IsCandidate reports whether ref could name an image set: an oci: or
// oci-archive: reference without an image name.
func IsCandidate(ref types.ImageReference) bool {
	switch ref.Transport().Name() {
	case layout.Transport.Name(), archive.Transport.Name():
		_, image, _ := strings.Cut(ref.StringWithinTransport(), ":")
		return image == ""
	}
	return false
}

// Open reads the image set ref names. An archive is unpacked once into a
// new directory under scratchDir, which Close removes. It fails with
// ErrNotImageSet when the layout has no host image (the caller then treats
// ref as a plain image), and with ErrInvalid when the set is damaged.
func Open(ctx context.Context, ref types.ImageReference, scratchDir string) (*Set, error) {
	path, _, _ := strings.Cut(ref.StringWithinTransport(), ":")
	name := ref.Transport().Name() + ":" + path
	set := &Set{Source: name, Dir: path}
	if ref.Transport().Name() == archive.Transport.Name() {
		dir, err := unpack(ctx, path, scratchDir)
		if err != nil {
			return nil, fmt.Errorf("%w %s: %w", ErrInvalid, name, err)
		}
		set.Dir, set.scratch = dir, dir
	}
	if err := set.read(); err != nil {
		set.Close()
		return nil, err
	}
	return set, nil
}

// unpack extracts an archive into a new directory under scratchDir.
func unpack(ctx context.Context, file, scratchDir string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := os.MkdirAll(scratchDir, 0o700); err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(scratchDir, "imageset-")
	if err != nil {
		return "", err
	}
	if err := starchive.Untar(f, dir, &starchive.TarOptions{NoLchown: true}); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("unpacking: %w", err)
	}
	if err := ctx.Err(); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

func (s *Set) read() error {
	data, err := os.ReadFile(filepath.Join(s.Dir, imgspecv1.ImageIndexFile))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %s has no %s (truncated, or not an OCI layout?)", ErrInvalid, s.Source, imgspecv1.ImageIndexFile)
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", s.Source, err)
	}
	var index imgspecv1.Index
	if err := json.Unmarshal(data, &index); err != nil {
		return fmt.Errorf("%w: %s: %s: %v", ErrInvalid, s.Source, imgspecv1.ImageIndexFile, err)
	}
	s.bound = map[string]Entry{}
	hosts := 0
	for _, d := range index.Manifests {
		role := d.Annotations[AnnotationRole]
		if role == "" {
			continue
		}
		e, err := s.entry(d)
		if err != nil {
			return err
		}
		switch role {
		case RoleHost:
			s.Host = e
			hosts++
		case RoleBound:
			s.bound[e.Ref] = e
		default:
			return fmt.Errorf("%w: %s: %s has unknown role %q", ErrInvalid, s.Source, e.Ref, role)
		}
	}
	switch {
	case hosts == 0:
		return fmt.Errorf("%w: %s has no image annotated %s=%s", ErrNotImageSet, s.Source, AnnotationRole, RoleHost)
	case hosts > 1:
		return fmt.Errorf("%w: %s has %d host images, want one", ErrInvalid, s.Source, hosts)
	}
	return nil
}

// entry checks one index entry: its name, and its manifest against the
// descriptor's digest (a layout source does not check manifests; copying
// checks blobs).
func (s *Set) entry(d imgspecv1.Descriptor) (Entry, error) {
	ref := d.Annotations[AnnotationReference]
	if ref == "" {
		ref = d.Annotations[imgspecv1.AnnotationRefName]
	}
	if ref == "" || ref != d.Annotations[imgspecv1.AnnotationRefName] {
		return Entry{}, fmt.Errorf("%w: %s: the entry for manifest %s has ref.name %q but %s %q",
			ErrInvalid, s.Source, d.Digest, d.Annotations[imgspecv1.AnnotationRefName], AnnotationReference, ref)
	}
	if err := d.Digest.Validate(); err != nil {
		return Entry{}, fmt.Errorf("%w: %s: %s: %v", ErrInvalid, s.Source, ref, err)
	}
	manifest, err := os.ReadFile(filepath.Join(s.Dir, imgspecv1.ImageBlobsDir, d.Digest.Algorithm().String(), d.Digest.Encoded()))
	if err != nil {
		return Entry{}, fmt.Errorf("%w: %s lacks the manifest of %s: %v", ErrInvalid, s.Source, ref, err)
	}
	if got := d.Digest.Algorithm().FromBytes(manifest); got != d.Digest {
		return Entry{}, fmt.Errorf("%w: %s: the manifest of %s does not match its digest %s (it hashes to %s)", ErrInvalid, s.Source, ref, d.Digest, got)
	}
	img, err := layout.NewReference(s.Dir, ref)
	if err != nil {
		return Entry{}, fmt.Errorf("%w: %s: %s: %v", ErrInvalid, s.Source, ref, err)
	}
	src := digest.Digest(d.Annotations[AnnotationSourceDigest])
	if src == "" {
		src = d.Digest
	}
	return Entry{Role: d.Annotations[AnnotationRole], Ref: ref, Digest: d.Digest, SourceDigest: src, Image: img}, nil
}

// HostName is the registry reference the host image was saved from.
func (s *Set) HostName() (types.ImageReference, error) {
	return store.ParseRegistryReference(s.Host.Ref)
}

// Bound returns the bound images of the set, by reference.
func (s *Set) Bound() map[string]Entry { return s.bound }

// BoundSource returns where to read bound image b from: its copy in the
// set. A set without b, or one whose copy does not have the digest b names,
// is an error naming both.
func (s *Set) BoundSource(b boundimages.Image) (types.ImageReference, error) {
	e, ok := s.bound[b.Ref]
	if !ok {
		return nil, fmt.Errorf("%w: %s does not hold bound image %s", ErrInvalid, s.Source, b.Ref)
	}
	named, err := reference.ParseNormalizedNamed(b.Ref)
	if err != nil {
		return nil, err
	}
	if d, ok := named.(reference.Digested); ok && d.Digest() != e.SourceDigest {
		return nil, fmt.Errorf("%w: %s holds %s with manifest digest %s, not the one its name requires", ErrInvalid, s.Source, b.Ref, e.SourceDigest)
	}
	return e.Image, nil
}

// Close removes the scratch copy of an archive.
func (s *Set) Close() error {
	if s.scratch == "" {
		return nil
	}
	err := os.RemoveAll(s.scratch)
	s.scratch = ""
	return err
}
