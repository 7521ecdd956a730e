package store

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/transports"
	"go.podman.io/image/v5/types"

	// The transports bootstore accepts, registered with transports.Get.
	_ "go.podman.io/image/v5/directory"
	_ "go.podman.io/image/v5/oci/archive"
	_ "go.podman.io/image/v5/oci/layout"
	_ "go.podman.io/image/v5/storage"
)

// ErrBadReference is wrapped by errors about unparseable image names.
var ErrBadReference = fmt.Errorf("invalid image reference")

// ParseReference parses an image name in containers/image's
// "transport:details" form (docker://, oci:, oci-archive:, dir:,
// containers-storage:). A bare name such as quay.io/org/os:1 means docker://.
func ParseReference(name string) (types.ImageReference, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: empty image name", ErrBadReference)
	}
	if transportName, rest, ok := strings.Cut(name, ":"); ok {
		if t := transports.Get(transportName); t != nil {
			if strings.Trim(rest, "/:") == "" {
				return nil, fmt.Errorf("%w %q: nothing after the %s: transport", ErrBadReference, name, transportName)
			}
			ref, err := t.ParseReference(rest)
			if err != nil {
				return nil, fmt.Errorf("%w %q: %v", ErrBadReference, name, err)
			}
			return ref, nil
		}
	}
	return ParseRegistryReference(name)
}

// ParseRegistryReference parses a registry image name (no transport prefix),
// normalising it as docker does (docker.io/library/, :latest).
func ParseRegistryReference(name string) (types.ImageReference, error) {
	named, err := reference.ParseNormalizedNamed(strings.TrimPrefix(name, "//"))
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrBadReference, name, err)
	}
	ref, err := docker.NewReference(reference.TagNameOnly(named))
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrBadReference, name, err)
	}
	return ref, nil
}

// IsRegistry reports whether ref reaches a registry.
func IsRegistry(ref types.ImageReference) bool {
	return ref.Transport().Name() == docker.Transport.Name()
}

var nameUnsafe = regexp.MustCompile(`[^a-z0-9._-]+`)

// storeName is the name an image from ref gets in the store: its registry
// name when it has one, else localhost/<last path element>:<tag>, as podman
// names images loaded from OCI layouts and archives.
func storeName(ref types.ImageReference) (reference.Named, error) {
	if named := ref.DockerReference(); named != nil {
		return reference.TagNameOnly(named), nil
	}
	within := ref.StringWithinTransport()
	path, tag, _ := strings.Cut(within, ":")
	if tag == "" || strings.ContainsAny(tag, "/@") {
		tag = "latest"
	}
	base := nameUnsafe.ReplaceAllString(strings.ToLower(filepath.Base(path)), "-")
	base = strings.Trim(base, "-._")
	if base == "" {
		base = "image"
	}
	named, err := reference.ParseNormalizedNamed("localhost/" + base + ":" + tag)
	if err != nil {
		return nil, fmt.Errorf("naming image from %s: %w", transports.ImageName(ref), err)
	}
	return named, nil
}

// storeNameOf normalises a registry name the way pulls name images
// (docker.io/library/, :latest).
func storeNameOf(name string) (string, error) {
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return "", err
	}
	return reference.TagNameOnly(named).String(), nil
}

// NameOf is the name an image pulled from ref gets in the store: its
// normalized registry reference, or localhost/<name>:<tag> for other
// transports.
func NameOf(ref types.ImageReference) (string, error) {
	named, err := storeName(ref)
	if err != nil {
		return "", err
	}
	return named.String(), nil
}
