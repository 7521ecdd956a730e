package status_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/bootstore/bootstore/pkg/status"
	"github.com/bootstore/bootstore/pkg/status/statustest"
	"github.com/bootstore/bootstore/pkg/sysroot"
	"go.yaml.in/yaml/v3"
)

const (
	digest0 = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	digest1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	digest2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

// deployment is a deployment of quay.io/example/os:<n> built at 2024-01-0<n+1>.
func deployment(n int) sysroot.Deployment {
	v := string(rune('0' + n))
	return sysroot.Deployment{
		Stateroot: "default",
		ID:        strings.Repeat(v, 64),
		Serial:    0,
		Origin: sysroot.Origin{
			Transport:      "docker",
			Image:          "quay.io/example/os:" + v,
			ImageID:        strings.Repeat(v, 64),
			ManifestDigest: []string{digest0, digest1, digest2}[n],
			BoundImages:    []string{strings.Repeat("b", 64)},
			Storage:        sysroot.StorageUnified,
			Version:        "4" + v,
			Timestamp:      "2024-01-0" + string(rune('1'+n)) + "T00:00:00Z",
			Architecture:   "amd64",
		},
	}
}

// render renders h in every format, validates JSON and YAML against the
// schema, checks they carry the same document, and returns the JSON (as a
// generic value) and the human output.
func render(t *testing.T, h *status.Host) (map[string]any, string) {
	t.Helper()
	var js, ys, hs bytes.Buffer
	if err := status.WriteJSON(&js, h); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(js.Bytes(), []byte("}\n")) {
		t.Errorf("JSON does not end in a newline:\n%s", js.Bytes())
	}
	statustest.ValidateHost(t, js.Bytes())
	if err := status.WriteYAML(&ys, h); err != nil {
		t.Fatal(err)
	}
	fromYAML := statustest.YAMLToJSON(t, ys.Bytes())
	statustest.ValidateHost(t, fromYAML)
	var a, b map[string]any
	if err := json.Unmarshal(js.Bytes(), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(fromYAML, &b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Errorf("YAML and JSON differ:\nJSON:\n%s\nYAML:\n%s", js.Bytes(), ys.Bytes())
	}
	if err := status.WriteHuman(&hs, h); err != nil {
		t.Fatal(err)
	}
	return a, hs.String()
}

// get walks a JSON value by member names and array indexes.
func get(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%v: not an object at %q", path, k)
			}
			if v, ok = m[k]; !ok {
				t.Fatalf("%v: no member %q", path, k)
			}
		case int:
			s, ok := v.([]any)
			if !ok || k >= len(s) {
				t.Fatalf("%v: no element %d", path, k)
			}
			v = s[k]
		}
	}
	return v
}

func eq(t *testing.T, doc any, want any, path ...any) {
	t.Helper()
	if got := get(t, doc, path...); !reflect.DeepEqual(got, want) {
		t.Errorf("%v = %#v, want %#v", path, got, want)
	}
}

func TestBootedOnly(t *testing.T) {
	st := &sysroot.State{Deployments: []sysroot.Deployment{deployment(1)}, Booted: 0}
	doc, human := render(t, status.Build(st))

	eq(t, doc, "org.containers.bootc/v1", "apiVersion")
	eq(t, doc, "BootcHost", "kind")
	eq(t, doc, "host", "metadata", "name")
	eq(t, doc, "quay.io/example/os:1", "spec", "image", "image")
	eq(t, doc, "registry", "spec", "image", "transport")
	eq(t, doc, "insecure", "spec", "image", "signature")
	eq(t, doc, "default", "spec", "bootOrder")
	eq(t, doc, "bootcHost", "status", "type")
	eq(t, doc, false, "status", "rollbackQueued")
	eq(t, doc, nil, "status", "staged")
	eq(t, doc, nil, "status", "rollback")
	eq(t, doc, nil, "status", "usrOverlay")
	eq(t, doc, false, "status", "readOnly")
	if _, ok := get(t, doc, "status").(map[string]any)["otherDeployments"]; ok {
		t.Error("otherDeployments written though empty")
	}

	booted := get(t, doc, "status", "booted")
	eq(t, booted, "quay.io/example/os:1", "image", "image", "image")
	eq(t, booted, "registry", "image", "image", "transport")
	eq(t, booted, "41", "image", "version")
	eq(t, booted, "2024-01-02T00:00:00Z", "image", "timestamp")
	eq(t, booted, digest1, "image", "imageDigest")
	eq(t, booted, "amd64", "image", "architecture")
	eq(t, booted, nil, "cachedUpdate")
	eq(t, booted, false, "incompatible")
	eq(t, booted, false, "pinned")
	eq(t, booted, false, "downloadOnly")
	eq(t, booted, nil, "store")
	eq(t, booted, "default", "ostree", "stateroot")
	eq(t, booted, strings.Repeat("1", 64), "ostree", "checksum")
	eq(t, booted, 0.0, "ostree", "deploySerial")
	eq(t, booted, "unified", "bootstore", "storage")
	eq(t, booted, []any{strings.Repeat("b", 64)}, "bootstore", "boundImages")
	eq(t, booted, strings.Repeat("1", 64)+".0", "bootstore", "deployment")

	want := "" +
		"● Booted image: quay.io/example/os:1\n" +
		"        Digest: " + digest1 + " (amd64)\n" +
		"       Version: 41 (2024-01-02T00:00:00Z)\n" +
		"       Storage: unified\n"
	if human != want {
		t.Errorf("human output:\n%s\nwant:\n%s", human, want)
	}
}

func TestBootedAndRollback(t *testing.T) {
	st := &sysroot.State{Deployments: []sysroot.Deployment{deployment(1), deployment(0)}, Booted: 0}
	doc, human := render(t, status.Build(st))
	eq(t, doc, "quay.io/example/os:1", "status", "booted", "image", "image", "image")
	eq(t, doc, "quay.io/example/os:0", "status", "rollback", "image", "image", "image")
	eq(t, doc, false, "status", "rollbackQueued")
	eq(t, doc, "default", "spec", "bootOrder")
	eq(t, doc, "quay.io/example/os:1", "spec", "image", "image")

	want := "" +
		"● Booted image: quay.io/example/os:1\n" +
		"        Digest: " + digest1 + " (amd64)\n" +
		"       Version: 41 (2024-01-02T00:00:00Z)\n" +
		"       Storage: unified\n" +
		"\n" +
		"  Rollback image: quay.io/example/os:0\n" +
		"          Digest: " + digest0 + " (amd64)\n" +
		"         Version: 40 (2024-01-01T00:00:00Z)\n" +
		"         Storage: unified\n"
	if human != want {
		t.Errorf("human output:\n%s\nwant:\n%s", human, want)
	}
}

func TestRollbackQueued(t *testing.T) {
	// The rollback deployment is first in boot order: it boots next.
	st := &sysroot.State{Deployments: []sysroot.Deployment{deployment(0), deployment(1)}, Booted: 1}
	doc, _ := render(t, status.Build(st))
	eq(t, doc, "quay.io/example/os:1", "status", "booted", "image", "image", "image")
	eq(t, doc, "quay.io/example/os:0", "status", "rollback", "image", "image", "image")
	eq(t, doc, true, "status", "rollbackQueued")
	eq(t, doc, "rollback", "spec", "bootOrder")
	eq(t, doc, "quay.io/example/os:1", "spec", "image", "image")
}

func TestStagedBootedRollback(t *testing.T) {
	staged := deployment(2)
	staged.Origin.Storage = sysroot.StorageSplit
	staged.Origin.BoundImages = nil
	st := &sysroot.State{
		Deployments: []sysroot.Deployment{deployment(1), deployment(0)},
		Booted:      0,
		Staged:      &staged,
	}
	h := status.Build(st)
	doc, human := render(t, h)
	eq(t, doc, "quay.io/example/os:2", "spec", "image", "image")
	eq(t, doc, "default", "spec", "bootOrder")
	eq(t, doc, "quay.io/example/os:2", "status", "staged", "image", "image", "image")
	eq(t, doc, "split", "status", "staged", "bootstore", "storage")
	eq(t, doc, []any{}, "status", "staged", "bootstore", "boundImages")
	eq(t, doc, "quay.io/example/os:1", "status", "booted", "image", "image", "image")
	eq(t, doc, "quay.io/example/os:0", "status", "rollback", "image", "image", "image")

	want := "" +
		"  Staged image: quay.io/example/os:2\n" +
		"        Digest: " + digest2 + " (amd64)\n" +
		"       Version: 42 (2024-01-03T00:00:00Z)\n" +
		"       Storage: split\n" +
		"\n" +
		"● Booted image: quay.io/example/os:1\n" +
		"        Digest: " + digest1 + " (amd64)\n" +
		"       Version: 41 (2024-01-02T00:00:00Z)\n" +
		"       Storage: unified\n" +
		"\n" +
		"  Rollback image: quay.io/example/os:0\n" +
		"          Digest: " + digest0 + " (amd64)\n" +
		"         Version: 40 (2024-01-01T00:00:00Z)\n" +
		"         Storage: unified\n"
	if human != want {
		t.Errorf("human output:\n%s\nwant:\n%s", human, want)
	}

	// --booted: only the booted entry; spec is kept.
	doc, human = render(t, status.FilterBooted(h))
	eq(t, doc, nil, "status", "staged")
	eq(t, doc, nil, "status", "rollback")
	eq(t, doc, "quay.io/example/os:1", "status", "booted", "image", "image", "image")
	eq(t, doc, "quay.io/example/os:2", "spec", "image", "image")
	if strings.Contains(human, "Staged") || strings.Contains(human, "Rollback") || !strings.HasPrefix(human, "● Booted image: quay.io/example/os:1\n") {
		t.Errorf("--booted human output:\n%s", human)
	}
	if h.Status.Staged == nil || h.Status.Rollback == nil {
		t.Error("FilterBooted changed its argument")
	}
}

func TestOtherDeployments(t *testing.T) {
	other := deployment(0)
	other.Serial = 1
	st := &sysroot.State{Deployments: []sysroot.Deployment{deployment(1), deployment(0), other}, Booted: 0}
	doc, human := render(t, status.Build(st))
	eq(t, doc, strings.Repeat("0", 64)+".0", "status", "rollback", "bootstore", "deployment")
	eq(t, doc, strings.Repeat("0", 64)+".1", "status", "otherDeployments", 0, "bootstore", "deployment")
	eq(t, doc, 1.0, "status", "otherDeployments", 0, "ostree", "deploySerial")
	if !strings.Contains(human, "\n   Other image: quay.io/example/os:0\n        Digest: "+digest0+" (amd64)\n") {
		t.Errorf("human output lacks the other deployment:\n%s", human)
	}
}

func TestNothingBooted(t *testing.T) {
	for name, st := range map[string]*sysroot.State{
		"nil":   nil,
		"empty": {Booted: -1},
	} {
		t.Run(name, func(t *testing.T) {
			doc, human := render(t, status.Build(st))
			// bootc's own document for a host it did not boot
			// (crates/lib/src/fixtures/spec-v1-null.json), plus the
			// members bootc added since.
			want := map[string]any{
				"apiVersion": "org.containers.bootc/v1",
				"kind":       "BootcHost",
				"metadata":   map[string]any{"name": "host"},
				"spec":       map[string]any{"image": nil, "bootOrder": "default"},
				"status": map[string]any{
					"staged": nil, "booted": nil, "rollback": nil,
					"rollbackQueued": false, "type": nil,
					"usrOverlay": nil, "readOnly": false,
				},
			}
			if !reflect.DeepEqual(doc, want) {
				t.Errorf("got %#v\nwant %#v", doc, want)
			}
			if human != "System is not deployed via bootc.\n" {
				t.Errorf("human output: %q", human)
			}
		})
	}
}

func TestBootedUnknown(t *testing.T) {
	// Deployments exist but none is the booted one (e.g. the kernel
	// command line names a deployment that is gone): nothing booted, no
	// rollback; what is on disk is still listed.
	staged := deployment(2)
	st := &sysroot.State{Deployments: []sysroot.Deployment{deployment(1), deployment(0)}, Booted: -1, Staged: &staged}
	doc, human := render(t, status.Build(st))
	eq(t, doc, nil, "status", "booted")
	eq(t, doc, nil, "status", "rollback")
	eq(t, doc, nil, "status", "type")
	eq(t, doc, false, "status", "rollbackQueued")
	eq(t, doc, "quay.io/example/os:2", "status", "staged", "image", "image", "image")
	eq(t, doc, "quay.io/example/os:2", "spec", "image", "image")
	eq(t, doc, "quay.io/example/os:1", "status", "otherDeployments", 0, "image", "image", "image")
	eq(t, doc, "quay.io/example/os:0", "status", "otherDeployments", 1, "image", "image", "image")
	if human != "System is not deployed via bootc.\n" {
		t.Errorf("human output: %q", human)
	}
}

func TestStagedAlsoInBootOrder(t *testing.T) {
	// A staged deployment already finalized into the boot order is
	// reported once, as staged.
	staged := deployment(2)
	st := &sysroot.State{Deployments: []sysroot.Deployment{deployment(2), deployment(1), deployment(0)}, Booted: 1, Staged: &staged}
	doc, _ := render(t, status.Build(st))
	eq(t, doc, "quay.io/example/os:2", "status", "staged", "image", "image", "image")
	eq(t, doc, "quay.io/example/os:1", "status", "booted", "image", "image", "image")
	eq(t, doc, "quay.io/example/os:0", "status", "rollback", "image", "image", "image")
	if _, ok := get(t, doc, "status").(map[string]any)["otherDeployments"]; ok {
		t.Error("the staged deployment is listed again in otherDeployments")
	}
}

func TestNonRegistryTransports(t *testing.T) {
	for _, tc := range []struct{ transport, image, shown string }{
		{"oci", "/var/mnt/osupdate", "oci:/var/mnt/osupdate"},
		{"oci-archive", "/srv/os.tar", "oci-archive:/srv/os.tar"},
		{"containers-storage", "localhost/os:1", "containers-storage:localhost/os:1"},
		{"dir", "/srv/os", "dir:/srv/os"},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			d := deployment(1)
			d.Origin.Transport, d.Origin.Image = tc.transport, tc.image
			d.Origin.Version = ""
			st := &sysroot.State{Deployments: []sysroot.Deployment{d}, Booted: 0}
			doc, human := render(t, status.Build(st))
			eq(t, doc, tc.transport, "spec", "image", "transport")
			eq(t, doc, tc.image, "spec", "image", "image")
			eq(t, doc, tc.transport, "status", "booted", "image", "image", "transport")
			eq(t, doc, nil, "status", "booted", "image", "version")
			want := "" +
				"● Booted image: " + tc.shown + "\n" +
				"        Digest: " + digest1 + " (amd64)\n" +
				"     Timestamp: 2024-01-02T00:00:00Z\n" +
				"       Storage: unified\n"
			if human != want {
				t.Errorf("human output:\n%s\nwant:\n%s", human, want)
			}
		})
	}
}

func TestSigned(t *testing.T) {
	d := deployment(1)
	d.Origin.Signed = true
	st := &sysroot.State{Deployments: []sysroot.Deployment{d}, Booted: 0}
	doc, _ := render(t, status.Build(st))
	eq(t, doc, "containerPolicy", "spec", "image", "signature")
	eq(t, doc, "containerPolicy", "status", "booted", "image", "image", "signature")
}

func TestTimestamps(t *testing.T) {
	for _, tc := range []struct {
		origin string
		json   any
		human  string
	}{
		// Converted to UTC; the human form drops fractions of seconds.
		{"2024-06-15T12:30:45.123456789+02:00", "2024-06-15T10:30:45.123456789Z", "       Version: 41 (2024-06-15T10:30:45Z)\n"},
		// Missing or unparsable: null, and no timestamp shown.
		{"", nil, "       Version: 41\n"},
		{"last tuesday", nil, "       Version: 41\n"},
	} {
		d := deployment(1)
		d.Origin.Timestamp = tc.origin
		st := &sysroot.State{Deployments: []sysroot.Deployment{d}, Booted: 0}
		doc, human := render(t, status.Build(st))
		eq(t, doc, tc.json, "status", "booted", "image", "timestamp")
		if !strings.Contains(human, tc.human) {
			t.Errorf("timestamp %q: human output lacks %q:\n%s", tc.origin, tc.human, human)
		}
	}
}

func TestHumanNoVersionNoTimestamp(t *testing.T) {
	d := deployment(1)
	d.Origin.Version, d.Origin.Timestamp, d.Origin.Storage = "", "", ""
	st := &sysroot.State{Deployments: []sysroot.Deployment{d}, Booted: 0}
	doc, human := render(t, status.Build(st))
	if _, ok := get(t, doc, "status", "booted", "bootstore").(map[string]any)["storage"]; ok {
		t.Error("empty storage written")
	}
	want := "" +
		"● Booted image: quay.io/example/os:1\n" +
		"        Digest: " + digest1 + " (amd64)\n"
	if human != want {
		t.Errorf("human output:\n%s\nwant:\n%s", human, want)
	}
}

func TestHumanPinnedAndOverlay(t *testing.T) {
	st := &sysroot.State{Deployments: []sysroot.Deployment{deployment(1)}, Booted: 0}
	h := status.Build(st)
	h.Status.Booted.Pinned = true
	h.Status.UsrOverlay = &status.FilesystemOverlay{AccessMode: "readWrite", Persistence: "transient"}
	_, human := render(t, h)
	for _, line := range []string{"        Pinned: yes\n", "  /usr overlay: transient, read/write\n"} {
		if !strings.Contains(human, line) {
			t.Errorf("human output lacks %q:\n%s", line, human)
		}
	}
}

func TestComposefs(t *testing.T) {
	d := deployment(1)
	d.Origin.Composefs, d.Origin.ComposefsVerity = "sha256:"+strings.Repeat("c", 64), true
	st := &sysroot.State{Deployments: []sysroot.Deployment{d, deployment(0)}, Booted: 0}
	doc, human := render(t, status.Build(st))
	booted := get(t, doc, "status", "booted")
	eq(t, booted, "sha256:"+strings.Repeat("c", 64), "bootstore", "composefs")
	eq(t, booted, true, "bootstore", "composefsVerity")
	if _, ok := get(t, doc, "status", "rollback", "bootstore").(map[string]any)["composefs"]; ok {
		t.Error("a tree deployment has a composefs member")
	}
	if line := "     Composefs: sha256:" + strings.Repeat("c", 64) + " (fs-verity required)\n"; !strings.Contains(human, line) {
		t.Errorf("human output lacks %q:\n%s", line, human)
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	staged := deployment(2)
	st := &sysroot.State{Deployments: []sysroot.Deployment{deployment(1), deployment(0)}, Booted: 0, Staged: &staged}
	h := status.Build(st)
	var js, ys bytes.Buffer
	if err := status.WriteJSON(&js, h); err != nil {
		t.Fatal(err)
	}
	if err := status.WriteYAML(&ys, h); err != nil {
		t.Fatal(err)
	}
	var fromJSON, fromYAML status.Host
	if err := json.Unmarshal(js.Bytes(), &fromJSON); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(ys.Bytes(), &fromYAML); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&fromJSON, h) {
		t.Errorf("JSON round trip:\n got %#v\nwant %#v", fromJSON, *h)
	}
	if !reflect.DeepEqual(&fromYAML, h) {
		t.Errorf("YAML round trip:\n got %#v\nwant %#v", fromYAML, *h)
	}
	if !strings.Contains(ys.String(), `timestamp: "2024-01-02T00:00:00Z"`) {
		t.Errorf("YAML timestamp is not a string:\n%s", ys.String())
	}
}
