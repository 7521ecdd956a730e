// Package status renders the host's deployments as bootc's BootcHost
// document (apiVersion org.containers.bootc/v1), so that tools written
// against `bootc status --json` read a bootstore host unchanged.
//
// A host has at most three deployments of interest, in the order bootc
// prints them:
//
//   - staged: written by an upgrade, finalized into the boot order at
//     shutdown, booted on the next boot;
//   - booted: the running deployment;
//   - rollback: the first other deployment in boot order, booted by
//     `bootstore rollback` (or next, when a rollback is queued).
//
// Any further deployments are listed as otherDeployments. Build turns a
// sysroot.State into a Host; WriteJSON, WriteYAML and WriteHuman render it.
//
// Each boot entry carries a "bootstore" member beside bootc's fields
// (bootc's schema allows additional members on a BootEntry): the storage
// mode of the deployment, the bound images it pins and its <id>.<serial>
// name.
package status

import (
	"time"

	"github.com/bootstore/bootstore/pkg/sysroot"
)

// The document's type, as bootc writes it.
const (
	APIVersion = "org.containers.bootc/v1"
	Kind       = "BootcHost"
	// objectName is metadata.name; there is only one host.
	objectName = "host"
)

// Host is bootc's BootcHost document. JSON and YAML member names follow
// bootc's schema (camelCase); members bootc always writes are written
// even when null.
type Host struct {
	APIVersion string     `json:"apiVersion" yaml:"apiVersion"`
	Kind       string     `json:"kind" yaml:"kind"`
	Metadata   ObjectMeta `json:"metadata" yaml:"metadata"`
	Spec       HostSpec   `json:"spec" yaml:"spec"`
	Status     HostStatus `json:"status" yaml:"status"`
}

// ObjectMeta is the Kubernetes-style object metadata; bootc sets only the
// name ("host").
type ObjectMeta struct {
	Name string `json:"name,omitempty" yaml:"name,omitempty"`
}

// BootOrder says which deployment boots next.
type BootOrder string

const (
	// BootOrderDefault: the staged deployment, or else the booted one,
	// boots next.
	BootOrderDefault BootOrder = "default"
	// BootOrderRollback: the rollback deployment boots next.
	BootOrderRollback BootOrder = "rollback"
)

// HostSpec is the host's desired state: the image it follows and the
// boot order.
type HostSpec struct {
	// Image is the image the host follows: the staged deployment's when
	// one is staged, else the booted deployment's, else null. This is
	// bootc's rule, so `bootc switch`-style tooling that compares
	// spec.image sees a pending upgrade as already requested.
	Image     *ImageReference `json:"image" yaml:"image"`
	BootOrder BootOrder       `json:"bootOrder" yaml:"bootOrder"`
}

// ImageSignature is how an image's signature was verified.
type ImageSignature string

const (
	// SignatureContainerPolicy: the pull deferred to containers-policy.json
	// and a policy other than insecureAcceptAnything applied.
	SignatureContainerPolicy ImageSignature = "containerPolicy"
	// SignatureInsecure: no signature verification was performed.
	SignatureInsecure ImageSignature = "insecure"
)

// ImageReference is an image name, its transport as bootc names it and
// its signature verification.
type ImageReference struct {
	// Image is the reference within the transport, e.g.
	// quay.io/org/os:1 or /srv/layout:v1.
	Image string `json:"image" yaml:"image"`
	// Transport is "registry" for docker://, else the containers/image
	// transport name: oci, oci-archive, containers-storage, dir.
	Transport string `json:"transport" yaml:"transport"`
	// Signature is always set by Build; empty is omitted.
	Signature ImageSignature `json:"signature,omitempty" yaml:"signature,omitempty"`
}

// String is the reference as bootc prints it: the bare name for a
// registry image, else transport:name (e.g. oci:/srv/layout).
func (r ImageReference) String() string {
	if r.Transport == "registry" {
		return r.Image
	}
	return r.Transport + ":" + r.Image
}

// ImageStatus is what is known about a deployed image.
type ImageStatus struct {
	Image ImageReference `json:"image" yaml:"image"`
	// Version is the image's version label, or null.
	Version *string `json:"version" yaml:"version"`
	// Timestamp is the image's build time in UTC, or null.
	Timestamp *time.Time `json:"timestamp" yaml:"timestamp"`
	// ImageDigest is the manifest digest (sha256:...).
	ImageDigest  string `json:"imageDigest" yaml:"imageDigest"`
	Architecture string `json:"architecture" yaml:"architecture"`
}

// BootEntryOstree locates a deployment the way ostree does.
type BootEntryOstree struct {
	Stateroot string `json:"stateroot" yaml:"stateroot"`
	// Checksum is the deployment's ID: the OS image's ID (config digest),
	// which bootstore uses where ostree uses the commit checksum.
	Checksum     string `json:"checksum" yaml:"checksum"`
	DeploySerial int    `json:"deploySerial" yaml:"deploySerial"`
}

// Extension is bootstore's member of a boot entry ("bootstore").
type Extension struct {
	// Storage is sysroot.StorageUnified or sysroot.StorageSplit; omitted
	// when the origin does not say.
	Storage string `json:"storage,omitempty" yaml:"storage,omitempty"`
	// BoundImages are the IDs of the logically bound images the
	// deployment pins; never null.
	BoundImages []string `json:"boundImages" yaml:"boundImages"`
	// Deployment is the deployment's <id>.<serial> name.
	Deployment string `json:"deployment" yaml:"deployment"`
	// Composefs is the digest of a composefs deployment's EROFS image;
	// omitted for a tree deployment.
	Composefs string `json:"composefs,omitempty" yaml:"composefs,omitempty"`
	// ComposefsVerity says the deployment is mounted with fs-verity
	// required of the store's files.
	ComposefsVerity bool `json:"composefsVerity,omitempty" yaml:"composefsVerity,omitempty"`
}

// BootEntry is one deployment.
type BootEntry struct {
	Image *ImageStatus `json:"image" yaml:"image"`
	// CachedUpdate is always null: bootstore records no `upgrade --check`
	// result.
	CachedUpdate *ImageStatus `json:"cachedUpdate" yaml:"cachedUpdate"`
	Incompatible bool         `json:"incompatible" yaml:"incompatible"`
	Pinned       bool         `json:"pinned" yaml:"pinned"`
	// SoftRebootCapable is always false.
	SoftRebootCapable bool `json:"softRebootCapable" yaml:"softRebootCapable"`
	DownloadOnly      bool `json:"downloadOnly" yaml:"downloadOnly"`
	// Store is always null: bootc's only value, "ostreeContainer", names
	// the ostree backend, which bootstore is not.
	Store     *string          `json:"store" yaml:"store"`
	Ostree    *BootEntryOstree `json:"ostree" yaml:"ostree"`
	Bootstore *Extension       `json:"bootstore,omitempty" yaml:"bootstore,omitempty"`
}

// HostType is the detected type of the running system.
type HostType string

// HostTypeBootcHost: the host booted a deployment of a container image.
const HostTypeBootcHost HostType = "bootcHost"

// FilesystemOverlay describes an overlay mounted on /usr. bootstore
// never mounts one; the member is there for bootc's readers.
type FilesystemOverlay struct {
	AccessMode  string `json:"accessMode" yaml:"accessMode"`
	Persistence string `json:"persistence" yaml:"persistence"`
}

// HostStatus is the host's deployments.
type HostStatus struct {
	Staged   *BootEntry `json:"staged" yaml:"staged"`
	Booted   *BootEntry `json:"booted" yaml:"booted"`
	Rollback *BootEntry `json:"rollback" yaml:"rollback"`
	// OtherDeployments are the deployments that are neither staged,
	// booted nor rollback, in boot order; omitted when empty.
	OtherDeployments []BootEntry `json:"otherDeployments,omitempty" yaml:"otherDeployments,omitempty"`
	// RollbackQueued is true when the rollback deployment precedes the
	// booted one in boot order, i.e. boots next.
	RollbackQueued bool `json:"rollbackQueued" yaml:"rollbackQueued"`
	// Type is HostTypeBootcHost when a deployment is booted, else null.
	Type       *HostType          `json:"type" yaml:"type"`
	UsrOverlay *FilesystemOverlay `json:"usrOverlay" yaml:"usrOverlay"`
	// ReadOnly is true when the physical root cannot be written; Build
	// leaves it false for the caller to set.
	ReadOnly bool `json:"readOnly" yaml:"readOnly"`
}

// Build renders the state as a Host. With nothing booted (st.Booted < 0,
// or st nil) status.booted, status.rollback and status.type are null, as
// bootc reports a host it did not boot; a staged deployment is still
// reported, and the deployments in the boot order are listed as
// otherDeployments.
func Build(st *sysroot.State) *Host {
	h := &Host{
		APIVersion: APIVersion,
		Kind:       Kind,
		Metadata:   ObjectMeta{Name: objectName},
		Spec:       HostSpec{BootOrder: BootOrderDefault},
	}
	if st == nil {
		return h
	}
	booted := st.BootedDeployment()
	rollback := rollbackOf(st)
	if st.Staged != nil {
		h.Status.Staged = bootEntry(st.Staged)
		h.Status.Staged.DownloadOnly = st.StagedDownloadOnly
	}
	if booted != nil {
		h.Status.Booted = bootEntry(booted)
		t := HostTypeBootcHost
		h.Status.Type = &t
		if st.CachedUpdate != nil {
			// What `upgrade --check` found: image fields only.
			h.Status.Booted.CachedUpdate = bootEntry(&sysroot.Deployment{Origin: *st.CachedUpdate}).Image
		}
	}
	if rollback != nil {
		h.Status.Rollback = bootEntry(rollback)
	}
	for i := range st.Deployments {
		d := &st.Deployments[i]
		switch {
		case d == booted:
			// Reported above.
		case d == rollback:
			h.Status.RollbackQueued = booted != nil && i < st.Booted
		case st.Staged != nil && sameDeployment(d, st.Staged):
			// A staged deployment already in the boot order (finalized
			// but its record not yet removed) is reported once.
		default:
			h.Status.OtherDeployments = append(h.Status.OtherDeployments, *bootEntry(d))
		}
	}
	if h.Status.RollbackQueued {
		h.Spec.BootOrder = BootOrderRollback
	}
	switch {
	case h.Status.Staged != nil:
		ref := h.Status.Staged.Image.Image
		h.Spec.Image = &ref
	case h.Status.Booted != nil:
		ref := h.Status.Booted.Image.Image
		h.Spec.Image = &ref
	}
	return h
}

// FilterBooted returns a copy of h that reports only the booted
// deployment (`status --booted`): staged, rollback and otherDeployments
// are dropped; spec and the host-wide members are kept, as bootc does.
// The copy shares h's entries.
func FilterBooted(h *Host) *Host {
	c := *h
	c.Status.Staged = nil
	c.Status.Rollback = nil
	c.Status.OtherDeployments = nil
	return &c
}

// rollbackOf is st.Rollback() as bootc picks it: none when nothing is
// booted, and never the staged deployment (which a crash during
// finalization can leave both staged and in the boot order).
func rollbackOf(st *sysroot.State) *sysroot.Deployment {
	if st.BootedDeployment() == nil {
		return nil
	}
	for i := range st.Deployments {
		d := &st.Deployments[i]
		if i != st.Booted && (st.Staged == nil || !sameDeployment(d, st.Staged)) {
			return d
		}
	}
	return nil
}

func sameDeployment(a, b *sysroot.Deployment) bool {
	return a.Stateroot == b.Stateroot && a.ID == b.ID && a.Serial == b.Serial
}

func bootEntry(d *sysroot.Deployment) *BootEntry {
	o := d.Origin
	img := &ImageStatus{
		Image:        imageReference(o),
		ImageDigest:  o.ManifestDigest,
		Architecture: o.Architecture,
	}
	if o.Version != "" {
		v := o.Version
		img.Version = &v
	}
	img.Timestamp = parseTimestamp(o.Timestamp)
	return &BootEntry{
		Image: img,
		Ostree: &BootEntryOstree{
			Stateroot:    d.Stateroot,
			Checksum:     d.ID,
			DeploySerial: d.Serial,
		},
		Bootstore: &Extension{
			Storage:         o.Storage,
			BoundImages:     append([]string{}, o.BoundImages...),
			Deployment:      d.Name(),
			Composefs:       o.Composefs,
			ComposefsVerity: o.ComposefsVerity,
		},
	}
}

func imageReference(o sysroot.Origin) ImageReference {
	r := ImageReference{Image: o.Image, Transport: o.Transport, Signature: SignatureInsecure}
	if o.Transport == "docker" {
		r.Transport = "registry"
	}
	if o.Signed {
		r.Signature = SignatureContainerPolicy
	}
	return r
}

// parseTimestamp reads an RFC 3339 timestamp into UTC; like bootc, a
// timestamp that does not parse is reported as null.
func parseTimestamp(s string) *time.Time {
	if s == "" {
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return nil
	}
	t = t.UTC()
	return &t
}
