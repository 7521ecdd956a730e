package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootstore/bootstore/tests/harness"
)

// signaturePolicy writes a policy.json that rejects everything from a
// registry except images meeting requirement (one policy requirement, JSON).
func signaturePolicy(t *testing.T, registry, requirement string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.json")
	policy := fmt.Sprintf(`{
  "default": [{"type": "reject"}],
  "transports": {
    "docker": {%q: [%s]},
    "containers-storage": {"": [{"type": "insecureAcceptAnything"}]}
  }
}`, registry, requirement)
	if err := os.WriteFile(p, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A policy that requires sigstore signatures from the OS image's registry:
// an unsigned OS image, one signed with another key, and a signed one whose
// bound image is unsigned are refused by install, upgrade and switch, with
// the image named and nothing left in the store; a signed one is installed
// and upgraded to, and status shows it verified by the container policy
// (bootc's ostree-image-signed origin).
func TestSignaturePolicyIsEnforced(t *testing.T) {
	reg := harness.StartRegistry(t)
	key, otherKey := harness.NewSigstoreKey(t), harness.NewSigstoreKey(t)
	regD := reg.SigstoreRegistriesD(t)
	// sigstore-signed by key for the image's own repository.
	policy := signaturePolicy(t, reg.Addr, fmt.Sprintf(`{"type": "sigstoreSigned", "keyPath": %q, "signedIdentity": {"type": "matchRepository"}}`, key.Public))

	signedApp, unsignedApp := reg.Ref("apps/signed:1"), reg.Ref("apps/unsigned:1")
	reg.PushSigned(t, harness.AppImage(t, "signed"), "apps/signed:1", "gzip", key)
	reg.Push(t, harness.AppImage(t, "unsigned"), "apps/unsigned:1", "gzip")
	bound := []harness.Bound{harness.BoundImage("signed", signedApp)}
	osImg := func(v string, b []harness.Bound) harness.Image {
		return osVersion(t, v, b, harness.Layer{etcFile("version", v+"\n")})
	}
	reg.PushSigned(t, osImg("1", bound), "os/host:stable", "gzip", key)
	reg.Push(t, osImg("1-unsigned", bound), "os/host:unsigned", "gzip")
	reg.PushSigned(t, osImg("1-other-key", bound), "os/host:other-key", "gzip", otherKey)
	reg.PushSigned(t, osImg("1-unsigned-lbi", []harness.Bound{harness.BoundImage("unsigned", unsignedApp)}), "os/host:unsigned-lbi", "gzip", key)

	h := newHost(t)
	flags := []string{"--tls-verify=false", "--signature-policy", policy, "--registries-d", regD}
	install := func(ref string) []string {
		args := append([]string{"install", "to-filesystem", "--source-imgref", ref, "--experimental-unified-storage"}, flags...)
		return append(args, h.root)
	}
	assertBadlySignedRefused(t, h, reg, install, unsignedApp)

	h.ok(install(reg.Ref("os/host:stable"))...)
	if sig := bootedSignature(t, h); sig != "containerPolicy" {
		t.Errorf("status: booted image signature %q, want containerPolicy", sig)
	}
	origins, _ := filepath.Glob(filepath.Join(h.root, "ostree/deploy/default/deploy/*.origin"))
	if len(origins) != 1 {
		t.Fatalf("origins: %v", origins)
	}
	if data, _ := os.ReadFile(origins[0]); !strings.Contains(string(data), "ostree-image-signed:docker://"+reg.Ref("os/host:stable")) {
		t.Errorf("the origin does not record a signed image:\n%s", data)
	}

	// The tag moves to an unsigned image: upgrade refuses it, and so does
	// a switch to another unsigned one; nothing is staged or added.
	reg.Push(t, osImg("2-unsigned", bound), "os/host:stable", "gzip")
	before := h.storeState()
	res := h.run(append([]string{"upgrade"}, flags...)...)
	if res.code == 0 || !strings.Contains(res.stderr, reg.Ref("os/host:stable")) {
		t.Errorf("upgrade to an unsigned image: want a refusal naming it\n%s", res)
	}
	res = h.run(append([]string{"switch", reg.Ref("os/host:unsigned")}, flags...)...)
	if res.code == 0 || !strings.Contains(res.stderr, reg.Ref("os/host:unsigned")) {
		t.Errorf("switch to an unsigned image: want a refusal naming it\n%s", res)
	}
	if h.status().Status.Staged != nil {
		t.Errorf("a refused upgrade or switch staged a deployment")
	}
	h.assertNothingLeft("refused upgrade and switch", before)

	reg.PushSigned(t, osImg("2", bound), "os/host:stable", "gzip", key)
	h.ok(append([]string{"upgrade", "--quiet"}, flags...)...)
	if v := versionOf(h.status(), "staged"); v != "2" {
		t.Errorf("upgrade to a signed image: staged %q, want 2", v)
	}
}

// assertBadlySignedRefused checks that install refuses the OS images both
// signature tests publish badly signed (unsigned, another key's, and one
// whose bound image unsignedApp is unsigned).
func assertBadlySignedRefused(t *testing.T, h *host, reg *harness.Registry, install func(ref string) []string, unsignedApp string) {
	t.Helper()
	for _, bad := range []struct{ ref, names string }{
		{reg.Ref("os/host:unsigned"), reg.Ref("os/host:unsigned")},
		{reg.Ref("os/host:other-key"), reg.Ref("os/host:other-key")},
		{reg.Ref("os/host:unsigned-lbi"), unsignedApp},
	} {
		assertInstallRefused(t, h, install(bad.ref), bad.ref, bad.names)
	}
}

// assertInstallRefused runs install (of ref) and checks that it fails
// naming names, leaving no deployment and nothing in the store.
func assertInstallRefused(t *testing.T, h *host, install []string, ref, names string) {
	t.Helper()
	res := h.run(install...)
	t.Logf("install %s: exit %d: %s", ref, res.code, firstLine(res.stderr))
	if res.code == 0 || !strings.Contains(res.stderr, names) {
		t.Errorf("install %s: want a refusal naming %s\n%s", ref, names, res)
	}
	if d := h.deployments("default"); len(d) != 0 {
		t.Fatalf("a refused install left deployments %v", d)
	}
	if _, err := os.Stat(h.storageRoot()); err == nil {
		if layers, images := h.storeContents(); len(layers) != 0 || len(images) != 0 {
			t.Errorf("a refused install of %s left %d layers and %d images in the store", ref, len(layers), len(images))
		}
	}
}

// A signedBy policy (GPG keys: simple signing, which hosts used before
// sigstore and many still do), with signatures that skopeo copy --sign-by
// wrote to a lookaside directory named in registries.d: an unsigned OS
// image, one signed with another key, and a signed one whose bound image
// is unsigned are refused by install, naming the image, with nothing left;
// a signed one is installed, and status shows it verified by the policy.
func TestGPGSignedByPolicyIsEnforced(t *testing.T) {
	reg := harness.StartRegistry(t)
	key, otherKey := harness.NewGPGKey(t), harness.NewGPGKey(t)
	regD := reg.LookasideRegistriesD(t)
	p := signaturePolicy(t, reg.Addr, fmt.Sprintf(`{"type": "signedBy", "keyType": "GPGKeys", "keyPath": %q}`, key.Public))

	signedApp, unsignedApp := reg.Ref("apps/signed:1"), reg.Ref("apps/unsigned:1")
	reg.PushGPGSigned(t, harness.AppImage(t, "signed"), "apps/signed:1", key)
	reg.Push(t, harness.AppImage(t, "unsigned"), "apps/unsigned:1", "gzip")
	bound := []harness.Bound{harness.BoundImage("signed", signedApp)}
	osImg := func(v string, b []harness.Bound) harness.Image {
		return osVersion(t, v, b, harness.Layer{etcFile("version", v+"\n")})
	}
	reg.PushGPGSigned(t, osImg("1", bound), "os/host:stable", key)
	reg.Push(t, osImg("1-unsigned", bound), "os/host:unsigned", "gzip")
	reg.PushGPGSigned(t, osImg("1-other-key", bound), "os/host:other-key", otherKey)
	reg.PushGPGSigned(t, osImg("1-unsigned-lbi", []harness.Bound{harness.BoundImage("unsigned", unsignedApp)}), "os/host:unsigned-lbi", key)

	h := newHost(t)
	install := func(ref string) []string {
		return []string{"install", "to-filesystem", "--source-imgref", ref, "--experimental-unified-storage",
			"--tls-verify=false", "--signature-policy", p, "--registries-d", regD, h.root}
	}
	assertBadlySignedRefused(t, h, reg, install, unsignedApp)
	h.ok(install(reg.Ref("os/host:stable"))...)
	if sig := bootedSignature(t, h); sig != "containerPolicy" {
		t.Errorf("status: booted image signature %q, want containerPolicy", sig)
	}
	if v := versionOf(h.status(), "booted"); v != "1" {
		t.Errorf("installed version %q, want 1", v)
	}
}

// bootedSignature is status's booted image signature field.
func bootedSignature(t *testing.T, h *host) string {
	t.Helper()
	var doc struct {
		Status struct {
			Booted *struct {
				Image struct {
					Image struct{ Signature string }
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(h.ok("status", "--format", "json").stdout), &doc); err != nil || doc.Status.Booted == nil {
		t.Fatalf("status: %v %+v", err, doc)
	}
	return doc.Status.Booted.Image.Image.Signature
}
