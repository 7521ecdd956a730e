package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/types"
)

// SecureRegistry is docker-registry as a private registry is deployed:
// HTTPS with a certificate from a CA of the test's own (clients need
// CertDir, a certs.d-style directory holding ca.crt) and htpasswd
// authentication for every request. There is no counting proxy in front.
type SecureRegistry struct {
	Addr       string // host:port, HTTPS
	CertDir    string // holds ca.crt, for --cert-dir
	User, Pass string
	LogFile    string
}

// StartSecureRegistry starts a SecureRegistry with one user; it is stopped
// when the test ends.
func StartSecureRegistry(t testing.TB, user, pass string) *SecureRegistry {
	t.Helper()
	RequireCommand(t, RegistryBinary)
	dir := t.TempDir()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	r := &SecureRegistry{Addr: fmt.Sprintf("127.0.0.1:%d", port), CertDir: filepath.Join(dir, "certs"),
		User: user, Pass: pass, LogFile: filepath.Join(dir, "registry.log")}
	caPool := writeTestPKI(t, r.CertDir, filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
auth:
  htpasswd:
    realm: bootstore-test
    path: %s
http:
  addr: %s
  secret: bootstore-harness
  tls:
    certificate: %s
    key: %s
`, filepath.Join(dir, "storage"), filepath.Join(dir, "htpasswd"), r.Addr, filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(r.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(RegistryBinary, "serve", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		if t.Failed() {
			t.Logf("secure docker-registry log tail:\n%s", tail(r.LogFile))
		}
	})
	// Ready once /v2/ answers over TLS (401: it wants credentials).
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool}}}
	if err := waitRegistry(client, "https://"+r.Addr+"/v2/", http.StatusUnauthorized, exited, r.LogFile); err != nil {
		t.Fatalf("secure registry: %v", err)
	}
	return r
}

// Ref names repoTag in the registry.
func (r *SecureRegistry) Ref(repoTag string) string { return r.Addr + "/" + repoTag }

// AuthFile writes a containers-auth.json in a temporary directory giving
// user:pass for scope (the registry "host:port", or "host:port/repo" for
// one repository namespace) and returns its path.
func (r *SecureRegistry) AuthFile(t testing.TB, scope, user, pass string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "auth.json")
	data := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, scope, base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Push writes img as an OCI layout and copies it to the registry as
// repoTag with the registry's user, over TLS checked against its CA.
func (r *SecureRegistry) Push(t testing.TB, img Image, repoTag, compressionName string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	if err := img.WriteOCILayout(dir, "latest"); err != nil {
		t.Fatalf("push %s: write OCI layout: %v", repoTag, err)
	}
	pushOCI(t, dir, "latest", r.Ref(repoTag), compressionName, func(_ *copy.Options, sys *types.SystemContext) {
		sys.DockerInsecureSkipTLSVerify = types.OptionalBoolFalse
		sys.DockerCertPath = r.CertDir
		sys.DockerAuthConfig = &types.DockerAuthConfig{Username: r.User, Password: r.Pass}
	})
}

// writeTestPKI writes a CA (certDir/ca.crt) and a server certificate for
// 127.0.0.1 signed by it, and returns a pool holding the CA.
func writeTestPKI(t testing.TB, certDir, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	if err := os.MkdirAll(certDir, 0o755); err != nil {
		t.Fatal(err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bootstore test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKeyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(p, typ string, der []byte, mode os.FileMode) {
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(certDir, "ca.crt"), "CERTIFICATE", caDER, 0o644)
	write(certFile, "CERTIFICATE", srvDER, 0o644)
	write(keyFile, "EC PRIVATE KEY", srvKeyDER, 0o600)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pool
}
