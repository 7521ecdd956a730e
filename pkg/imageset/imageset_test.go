package imageset

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/bootstore/bootstore/pkg/boundimages"
	"github.com/bootstore/bootstore/pkg/store"
)

// layoutEntry is one index entry of a test layout: a manifest blob with
// the given annotations.
type layoutEntry struct {
	manifest    string
	annotations map[string]string
}

// writeLayout writes an OCI layout index whose entries point at manifest
// blobs (only manifests: Open reads nothing else).
func writeLayout(t *testing.T, entries ...layoutEntry) string {
	t.Helper()
	dir := t.TempDir()
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	index := imgspecv1.Index{MediaType: imgspecv1.MediaTypeImageIndex}
	index.SchemaVersion = 2
	for _, e := range entries {
		d := digest.FromString(e.manifest)
		if err := os.WriteFile(filepath.Join(blobs, d.Encoded()), []byte(e.manifest), 0o644); err != nil {
			t.Fatal(err)
		}
		index.Manifests = append(index.Manifests, imgspecv1.Descriptor{MediaType: imgspecv1.MediaTypeImageManifest,
			Digest: d, Size: int64(len(e.manifest)), Annotations: e.annotations})
	}
	data, _ := json.Marshal(index)
	if err := os.WriteFile(filepath.Join(dir, "index.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func entry(ref, role, manifest string) layoutEntry {
	return layoutEntry{manifest: manifest, annotations: map[string]string{
		imgspecv1.AnnotationRefName: ref, AnnotationReference: ref, AnnotationRole: role}}
}

func open(t *testing.T, dir string) (*Set, error) {
	t.Helper()
	ref, err := store.ParseReference("oci:" + dir)
	if err != nil {
		t.Fatal(err)
	}
	return Open(context.Background(), ref, t.TempDir())
}

func TestIsCandidate(t *testing.T) {
	for name, want := range map[string]bool{
		"oci:/srv/set": true, "oci-archive:/srv/set.tar": true,
		"oci:/srv/set:os": false, "oci-archive:/srv/set.tar:os": false,
		"docker://quay.io/os:1": false, "dir:/srv/os": false,
	} {
		ref, err := store.ParseReference(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := IsCandidate(ref); got != want {
			t.Errorf("IsCandidate(%s) = %v, want %v", name, got, want)
		}
	}
}

func TestOpenFindsHostAndBoundImages(t *testing.T) {
	app := `{"app":1}`
	pinned := "quay.io/x/pinned@" + digest.FromString(app).String()
	dir := writeLayout(t,
		entry("quay.io/x/os:1", RoleHost, `{"os":1}`),
		entry("quay.io/x/app:1", RoleBound, app),
		entry(pinned, RoleBound, app),
		layoutEntry{manifest: `{"unrelated":1}`}, // entries without a role are ignored
	)
	set, err := open(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if set.Host.Ref != "quay.io/x/os:1" || set.Host.SourceDigest != digest.FromString(`{"os":1}`) {
		t.Errorf("host entry: %+v", set.Host)
	}
	if name, err := set.HostName(); err != nil || name.DockerReference().String() != "quay.io/x/os:1" {
		t.Errorf("HostName: %v, %v", name, err)
	}
	for _, ref := range []string{"quay.io/x/app:1", pinned} {
		src, err := set.BoundSource(boundimages.Image{Ref: ref})
		if err != nil || !strings.HasSuffix(src.StringWithinTransport(), ":"+ref) {
			t.Errorf("BoundSource(%s) = %v, %v", ref, src, err)
		}
	}
	if _, err := set.BoundSource(boundimages.Image{Ref: "quay.io/x/missing:1"}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "quay.io/x/missing:1") {
		t.Errorf("a missing bound image: %v", err)
	}
}

func TestBoundSourceRefusesOtherDigest(t *testing.T) {
	other := "quay.io/x/pinned@" + digest.FromString("something else").String()
	dir := writeLayout(t, entry("quay.io/x/os:1", RoleHost, `{"os":1}`), entry(other, RoleBound, `{"app":1}`))
	set, err := open(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if _, err := set.BoundSource(boundimages.Image{Ref: other}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), other) {
		t.Errorf("a bound image whose digest differs from its name: %v", err)
	}
}

func TestOpenRefusesDamagedSets(t *testing.T) {
	host := entry("quay.io/x/os:1", RoleHost, `{"os":1}`)
	if _, err := open(t, writeLayout(t, layoutEntry{manifest: `{"os":1}`})); !errors.Is(err, ErrNotImageSet) {
		t.Errorf("a plain layout: %v", err)
	}
	if _, err := open(t, writeLayout(t, host, entry("quay.io/x/os:2", RoleHost, `{"os":2}`))); !errors.Is(err, ErrInvalid) {
		t.Errorf("two host images: %v", err)
	}
	dir := writeLayout(t, host)
	d := digest.FromString(`{"os":1}`)
	if err := os.WriteFile(filepath.Join(dir, "blobs/sha256", d.Encoded()), []byte(`{"os":2}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := open(t, dir); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "does not match its digest") {
		t.Errorf("a tampered manifest: %v", err)
	}
	if _, err := open(t, t.TempDir()); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "index.json") {
		t.Errorf("an empty directory: %v", err)
	}
}
