package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// GPGKey is an OpenPGP signing key made by gpg in a GNUPGHOME of its own,
// as an admin makes one for `skopeo copy --sign-by`; Public is the exported
// public key, a policy's signedBy keyPath.
type GPGKey struct {
	Home, Fingerprint, Public string
}

// NewGPGKey makes an ed25519 key with no passphrase; the gpg-agent that gpg
// starts for it is stopped when the test ends.
func NewGPGKey(t testing.TB) GPGKey {
	t.Helper()
	RequireCommand(t, "gpg")
	RequireCommand(t, "gpgconf")
	// Short: gpg-agent's socket lives in it, and socket paths are short.
	home, err := os.MkdirTemp("", "bsgpg-")
	if err != nil {
		t.Fatal(err)
	}
	k := GPGKey{Home: home, Public: filepath.Join(home, "public.gpg")}
	gpg := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "gpg", append([]string{"--batch", "--homedir", home}, args...)...)
		out, err := run(cmd)
		if err != nil {
			t.Fatalf("gpg: %v", err)
		}
		return out
	}
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
		os.RemoveAll(home)
	})
	gpg("--passphrase", "", "--quick-gen-key", "bootstore test <test@bootstore.invalid>", "ed25519", "sign", "never")
	for _, line := range strings.Split(gpg("--with-colons", "--list-secret-keys"), "\n") {
		if f := strings.Split(line, ":"); len(f) > 9 && f[0] == "fpr" {
			k.Fingerprint = f[9]
			break
		}
	}
	if k.Fingerprint == "" {
		t.Fatal("gpg: no fingerprint for the key just made")
	}
	if err := os.WriteFile(k.Public, []byte(gpg("--export", k.Fingerprint)), 0o644); err != nil {
		t.Fatal(err)
	}
	return k
}

// LookasideRegistriesD writes a containers-registries.d directory telling
// clients that this registry (through the proxy and directly) keeps simple
// signing signatures in a lookaside directory (file://, the same for every
// call on r), readable and writable, and returns it.
func (r *Registry) LookasideRegistriesD(t testing.TB) string {
	t.Helper()
	sigs := filepath.Join(filepath.Dir(r.StorageDir), "lookaside")
	if err := os.MkdirAll(sigs, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var conf strings.Builder
	conf.WriteString("docker:\n")
	for _, addr := range []string{r.Addr, r.DirectAddr} {
		fmt.Fprintf(&conf, "  %s:\n    lookaside: file://%s\n    lookaside-staging: file://%s\n", addr, sigs, sigs)
	}
	if err := os.WriteFile(filepath.Join(dir, "harness.yaml"), []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// PushGPGSigned pushes img through the proxy's address (the name clients
// use, which the signature binds) with `skopeo copy --sign-by`, which signs
// with gpg (GPGME) and writes the signature to r's lookaside directory: the
// way a GPG-signed image is published, with the tool that publishes it.
func (r *Registry) PushGPGSigned(t testing.TB, img Image, repoTag string, key GPGKey) {
	t.Helper()
	RequireCommand(t, "skopeo")
	dir := filepath.Join(t.TempDir(), "layout")
	if err := img.WriteOCILayout(dir, "latest"); err != nil {
		t.Fatalf("push %s: write OCI layout: %v", repoTag, err)
	}
	s := Skopeo{Env: []string{"GNUPGHOME=" + key.Home}}
	if _, err := s.Run(t, "--registries.d", r.LookasideRegistriesD(t), "copy", "--dest-tls-verify=false",
		"--sign-by", key.Fingerprint, "oci:"+dir+":latest", "docker://"+r.Ref(repoTag)); err != nil {
		t.Fatalf("push %s signed by %s: %v", repoTag, key.Fingerprint, err)
	}
}
