package sysroot

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
)

// Storage modes of a deployment's OS image.
const (
	// StorageUnified: the OS image lives in the unified store and the
	// deployment shares its files.
	StorageUnified = "unified"
	// StorageSplit: the deployment is a copy; the OS image is not kept
	// (how bootc hosts store it today, in ostree instead).
	StorageSplit = "split"
)

// Origin says where a deployment came from. It is stored beside the
// deployment as <id>.<serial>.origin, a GLib keyfile as ostree writes it:
//
//	[origin]
//	container-image-reference=ostree-unverified-registry:quay.io/org/os:1
//
//	[bootstore]
//	image-id=<config digest hex>
//	manifest-digest=sha256:...
//	bound-images=<id>;<id>;
//	storage=unified
//	...
//
// ostree and bootc read the [origin] group; the [bootstore] group is ours.
type Origin struct {
	// Transport is the containers/image transport: docker, oci,
	// oci-archive, containers-storage, dir.
	Transport string
	// Image is the reference within the transport, e.g. quay.io/org/os:1
	// or /srv/layout:v1.
	Image string
	// Signed is true when a signature policy other than
	// insecureAcceptAnything applied to the pull.
	Signed bool

	ImageID        string
	ManifestDigest string
	// BoundImages are the image IDs of the bound images at deploy time.
	BoundImages []string
	// Storage is StorageUnified or StorageSplit.
	Storage string

	Version      string
	Timestamp    string
	Architecture string
	// Kargs are the kernel arguments of the deployment's boot entry.
	Kargs []string
	// Composefs is the digest ("sha256:...") of the deployment's composefs
	// image, empty for a deployment that is a tree of files.
	Composefs string
	// ComposefsVerity says the image records fs-verity digests of the
	// store's files, to be mounted with verity=require.
	ComposefsVerity bool
}

// ContainerImageReference renders ostree-ext's origin reference:
// ostree-unverified-registry:REF, ostree-image-signed:docker://REF,
// ostree-unverified-image:TRANSPORT:REF.
func (o Origin) ContainerImageReference() string {
	switch {
	case o.Signed:
		return "ostree-image-signed:" + o.Transport + ":" + transportPrefix(o.Transport) + o.Image
	case o.Transport == "docker":
		return "ostree-unverified-registry:" + o.Image
	default:
		return "ostree-unverified-image:" + o.Transport + ":" + o.Image
	}
}

func transportPrefix(t string) string {
	if t == "docker" {
		return "//"
	}
	return ""
}

// parseContainerImageReference is ContainerImageReference's inverse.
func parseContainerImageReference(s string) (transport, image string, signed bool, err error) {
	kind, rest, ok := strings.Cut(s, ":")
	if !ok {
		return "", "", false, fmt.Errorf("container-image-reference %q has no scheme", s)
	}
	switch kind {
	case "ostree-unverified-registry":
		return "docker", rest, false, nil
	case "ostree-unverified-image", "ostree-image-signed", "ostree-remote-image":
		t, img, ok := strings.Cut(rest, ":")
		if !ok {
			return "", "", false, fmt.Errorf("container-image-reference %q has no transport", s)
		}
		if t == "registry" {
			t = "docker"
		}
		return t, strings.TrimPrefix(img, "//"), kind != "ostree-unverified-image", nil
	}
	return "", "", false, fmt.Errorf("container-image-reference %q: unknown scheme %q", s, kind)
}

// Marshal renders the keyfile.
func (o Origin) Marshal() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "[origin]\ncontainer-image-reference=%s\n\n[bootstore]\n", escapeValue(o.ContainerImageReference()))
	kv := map[string]string{
		"image-id":        o.ImageID,
		"manifest-digest": o.ManifestDigest,
		"bound-images":    joinList(o.BoundImages),
		"storage":         o.Storage,
		"version":         o.Version,
		"timestamp":       o.Timestamp,
		"architecture":    o.Architecture,
		"kargs":           joinList(o.Kargs),
		"composefs":       o.Composefs,
	}
	if o.ComposefsVerity {
		kv["composefs-verity"] = "true"
	}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if kv[k] != "" {
			fmt.Fprintf(&b, "%s=%s\n", k, escapeValue(kv[k]))
		}
	}
	return b.Bytes()
}

// UnmarshalOrigin parses a keyfile written by Marshal (or by ostree, whose
// extra keys are ignored).
func UnmarshalOrigin(data []byte) (Origin, error) {
	opts, err := parseKeyfile(data)
	if err != nil {
		return Origin{}, err
	}
	var o Origin
	ours := false // a [bootstore] group is present
	for _, opt := range opts {
		v := opt.value
		ours = ours || opt.group == "bootstore"
		switch opt.group + "." + opt.key {
		case "origin.container-image-reference":
			if o.Transport, o.Image, o.Signed, err = parseContainerImageReference(v); err != nil {
				return Origin{}, err
			}
		case "bootstore.image-id":
			o.ImageID = v
		case "bootstore.manifest-digest":
			o.ManifestDigest = v
		case "bootstore.bound-images":
			o.BoundImages = splitList(v)
		case "bootstore.storage":
			o.Storage = v
		case "bootstore.version":
			o.Version = v
		case "bootstore.timestamp":
			o.Timestamp = v
		case "bootstore.architecture":
			o.Architecture = v
		case "bootstore.kargs":
			o.Kargs = splitList(v)
		case "bootstore.composefs":
			o.Composefs = v
		case "bootstore.composefs-verity":
			o.ComposefsVerity = v == "true"
		}
	}
	if o.Image == "" {
		return Origin{}, fmt.Errorf("no [origin] container-image-reference")
	}
	// Marshal always writes these; without them the file was cut short,
	// and gc would take the deployment's images for unused.
	if ours && (o.ImageID == "" || o.Storage == "") {
		return Origin{}, errors.New("the [bootstore] group lacks image-id or storage: the file is incomplete (damaged)")
	}
	return o, nil
}

// ReadOrigin reads an origin file.
func ReadOrigin(path string) (Origin, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Origin{}, err
	}
	o, err := UnmarshalOrigin(data)
	if err != nil {
		return Origin{}, fmt.Errorf("reading %s: %w", path, err)
	}
	return o, nil
}

// Keyfile lists are ';'-terminated; ';' and '\' inside items are escaped.
func joinList(items []string) string {
	var b strings.Builder
	for _, it := range items {
		b.WriteString(strings.NewReplacer(`\`, `\\`, ";", `\;`).Replace(it))
		b.WriteByte(';')
	}
	return b.String()
}

func splitList(s string) []string {
	var items []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case s[i] == ';':
			items = append(items, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	if cur.Len() > 0 {
		items = append(items, cur.String())
	}
	return items
}
