package sysroot

import (
	"reflect"
	"strings"
	"testing"
)

// originSeeds are origin files as bootstore, ostree and bootc write them.
var originSeeds = []string{
	"[origin]\ncontainer-image-reference=ostree-unverified-registry:quay.io/org/os:1\n\n[bootstore]\nimage-id=" +
		strings.Repeat("ab", 32) + "\nmanifest-digest=sha256:" + strings.Repeat("cd", 32) +
		"\nbound-images=" + strings.Repeat("01", 32) + ";" + strings.Repeat("02", 32) + ";\nstorage=unified\nversion=42\n" +
		"timestamp=2026-12-05T08:00:00Z\narchitecture=amd64\nkargs=console=ttyS0;quiet;\n",
	"[origin]\ncontainer-image-reference=ostree-image-signed:docker://quay.io/org/os:1\n",
	"[origin]\ncontainer-image-reference=ostree-unverified-image:oci:/srv/layout:v1\n\n[bootstore]\nstorage=split\n",
	"[origin]\ncontainer-image-reference=ostree-remote-image:fedora:registry:quay.io/fedora/fedora-bootc:41\n",
	// ostree's own origin for a booted bootc host, with keys bootstore ignores.
	"[origin]\ncontainer-image-reference=ostree-unverified-registry:quay.io/fedora/fedora-bootc:41\n\n[libostree-transient]\nunlocked=none\n",
	"[origin]\ncontainer-image-reference=ostree-unverified-registry:a\n[bootstore]\nkargs=a\\;b;c\\\\;\n",
	"[origin]\n",
	"",
}

// FuzzOriginKeyfile parses fuzzed keyfiles. Property: whatever parses
// writes back (Marshal) to a keyfile that parses to the same Origin, and
// that keyfile is stable (marshalling again gives the same bytes).
func FuzzOriginKeyfile(f *testing.F) {
	for _, s := range originSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := UnmarshalOrigin(data)
		if err != nil {
			return
		}
		out := o.Marshal()
		o2, err := UnmarshalOrigin(out)
		if err != nil {
			t.Fatalf("%q parsed, but its rewrite %q does not: %v", data, out, err)
		}
		if !sameOrigin(o, o2) {
			t.Fatalf("round trip of %q via %q:\n got %+v\nwant %+v", data, out, o2, o)
		}
		if again := o2.Marshal(); string(again) != string(out) {
			t.Fatalf("Marshal is not stable: %q then %q", out, again)
		}
	})
}

// FuzzOriginFields builds an Origin from fuzzed values, writes and reads it:
// what a deployment records must come back as it was written, whatever
// the image's labels or the user's kargs contain: a line break or a trailing
// backslash must neither forge a key nor swallow the next one.
func FuzzOriginFields(f *testing.F) {
	f.Add("docker", "quay.io/org/os:1", false, "42", "console=ttyS0", "a;b\\c")
	f.Add("oci", "/srv/layout:v1", true, "v1\nimage-id=forged", "x=\"a b\"", "")
	f.Fuzz(func(t *testing.T, transport, image string, signed bool, version, karg1, karg2 string) {
		if image == "" || transport == "" {
			return
		}
		o := Origin{Transport: transport, Image: image, Signed: signed, Version: version, Kargs: []string{karg1, karg2}, Storage: StorageUnified, ImageID: "abc"}
		o2, err := UnmarshalOrigin(o.Marshal())
		if err != nil {
			// Only values whose reference cannot be written are refused.
			return
		}
		if o2.Version != version || !reflect.DeepEqual(o2.Kargs, o.Kargs) {
			t.Fatalf("version %q kargs %q came back as %q %q (keyfile %q)", version, o.Kargs, o2.Version, o2.Kargs, o.Marshal())
		}
		if !strings.Contains(transport, ":") && !strings.HasPrefix(image, "//") && (o2.Transport != transport && !(transport == "registry" && o2.Transport == "docker") || o2.Image != image || o2.Signed != signed) {
			t.Fatalf("reference %s:%s signed=%v came back as %s:%s signed=%v (keyfile %q)", transport, image, signed, o2.Transport, o2.Image, o2.Signed, o.Marshal())
		}
		if o2.ImageID != o.ImageID {
			t.Fatalf("a value forged image-id=%q (keyfile %q)", o2.ImageID, o.Marshal())
		}
	})
}

// sameOrigin compares two origins, a nil list equal to an empty one.
func sameOrigin(a, b Origin) bool {
	norm := func(o Origin) Origin {
		if len(o.BoundImages) == 0 {
			o.BoundImages = nil
		}
		if len(o.Kargs) == 0 {
			o.Kargs = nil
		}
		return o
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

// TestOriginSurvivesHostileValues: regressions the fuzzers found. A value
// ending in a backslash swallowed the next key (the unit parser read it as
// a continuation), and a deployment with 32 or more bound images wrote a
// bound-images line the unit parser refused (LINE_MAX 2048), so status and
// gc failed on that deployment.
func TestOriginSurvivesHostileValues(t *testing.T) {
	var bound []string
	for i := 0; i < 100; i++ {
		bound = append(bound, strings.Repeat(string(rune('a'+i%6)), 64))
	}
	o := Origin{Transport: "docker", Image: "quay.io/org/os:1", ImageID: "abc", Architecture: `amd64\`, BoundImages: bound,
		Version: " v1\n[origin]\ncontainer-image-reference=ostree-unverified-registry:evil", Storage: StorageUnified, Kargs: []string{`a\`, "b;c", ""}}
	got, err := UnmarshalOrigin(o.Marshal())
	if err != nil {
		t.Fatalf("reading back %q: %v", o.Marshal(), err)
	}
	if !sameOrigin(o, got) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, o)
	}
	// An origin written before (lists escaped with "\;") still reads.
	old, err := UnmarshalOrigin([]byte("[origin]\ncontainer-image-reference=ostree-unverified-registry:a\n\n[bootstore]\nimage-id=ab\nkargs=x\\;y;quiet;\nstorage=unified\n"))
	if err != nil || !reflect.DeepEqual(old.Kargs, []string{"x;y", "quiet"}) {
		t.Errorf("an earlier origin: %+v, %v", old, err)
	}
}

// TestOriginCutShortIsAnError: an origin cut inside its [bootstore] group
// (a full disk, a torn write outside bootstore) must not read as a
// deployment without images, which gc would then collect.
func TestOriginCutShortIsAnError(t *testing.T) {
	full := Origin{Transport: "docker", Image: "quay.io/org/os:1", ImageID: strings.Repeat("ab", 32),
		ManifestDigest: "sha256:" + strings.Repeat("cd", 32), BoundImages: []string{strings.Repeat("01", 32)},
		Storage: StorageUnified, Version: "1"}.Marshal()
	cut := full[:strings.Index(string(full), "image-id=")]
	if _, err := UnmarshalOrigin(cut); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Errorf("an origin cut before image-id: %v", err)
	}
	if _, err := UnmarshalOrigin(full); err != nil {
		t.Errorf("the whole origin: %v", err)
	}
}
