package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/signature/signer"
	"go.podman.io/image/v5/signature/sigstore"
	"go.podman.io/image/v5/types"
)

// SigstoreKey is a sigstore key pair written to files, as
// `skopeo generate-sigstore-key` writes one.
type SigstoreKey struct {
	Public, Private string
	Passphrase      []byte
}

// NewSigstoreKey generates a key pair in a temporary directory.
func NewSigstoreKey(t testing.TB) SigstoreKey {
	t.Helper()
	pass := []byte("harness-key-passphrase")
	kp, err := sigstore.GenerateKeyPair(pass)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	k := SigstoreKey{Public: filepath.Join(dir, "key.pub"), Private: filepath.Join(dir, "key.private"), Passphrase: pass}
	if err := os.WriteFile(k.Public, kp.PublicKey, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k.Private, kp.PrivateKey, 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

// SigstoreRegistriesD writes a containers-registries.d directory telling
// clients that this registry (through the proxy and directly) keeps
// sigstore signatures as attachments, and returns it.
func (r *Registry) SigstoreRegistriesD(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	conf := fmt.Sprintf("docker:\n  %s:\n    use-sigstore-attachments: true\n  %s:\n    use-sigstore-attachments: true\n", r.Addr, r.DirectAddr)
	if err := os.WriteFile(filepath.Join(dir, "harness.yaml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// PushSigned is Push through the proxy's address (the name clients use,
// which the signature binds), adding a sigstore signature made with key.
func (r *Registry) PushSigned(t testing.TB, img Image, repoTag, compressionName string, key SigstoreKey) digest.Digest {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	if err := img.WriteOCILayout(dir, "latest"); err != nil {
		t.Fatalf("push %s: write OCI layout: %v", repoTag, err)
	}
	s, err := sigstore.NewSigner(sigstore.WithPrivateKeyFile(key.Private, key.Passphrase))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	regD := r.SigstoreRegistriesD(t)
	return pushOCI(t, dir, "latest", r.Ref(repoTag), compressionName, func(o *copy.Options, sys *types.SystemContext) {
		o.Signers = []*signer.Signer{s}
		sys.RegistriesDirPath = regD
	})
}
