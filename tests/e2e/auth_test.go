package e2e

import (
	"strings"
	"testing"

	"github.com/bootstore/bootstore/tests/harness"
)

// A private registry as fleets run them: docker-registry with htpasswd
// authentication, over TLS from a CA of the test's own (--cert-dir). The
// OS image's credentials come from --authfile at install and from
// REGISTRY_AUTH_FILE at upgrade; the bound image's only from its quadlet's
// AuthFile= (each file is scoped to one repository namespace, so neither
// could stand in for the other). A wrong password fails naming the
// registry and never printing the secret; a missing CA fails naming it too.
func TestAuthenticatedTLSRegistry(t *testing.T) {
	const user, pass, wrong = "fleet", "Tr0ub4dor-and-3", "not-the-Passw0rd"
	reg := harness.StartSecureRegistry(t, user, pass)
	app := reg.Ref("apps/priv:1")
	appsAuth := reg.AuthFile(t, reg.Addr+"/apps", user, pass)
	bound := harness.BoundImage("priv", app)
	bound.Content = harness.ImageQuadlet(app) + "AuthFile=" + appsAuth + "\n"
	reg.Push(t, harness.AppImage(t, "priv"), "apps/priv:1", "gzip")
	osRef := reg.Ref("os/host:stable")
	reg.Push(t, osVersion(t, "1", []harness.Bound{bound}, harness.Layer{etcFile("version", "1\n")}), "os/host:stable", "gzip")
	osAuth := reg.AuthFile(t, reg.Addr+"/os", user, pass)

	h := newHost(t)
	install := func(extra ...string) []string {
		args := append([]string{"install", "to-filesystem", "--signature-policy", h.policy, "--source-imgref", osRef,
			"--experimental-unified-storage"}, extra...)
		return append(args, h.root)
	}
	noSecret := func(what string, res result) {
		t.Helper()
		if strings.Contains(res.stderr+res.stdout, pass) || strings.Contains(res.stderr+res.stdout, wrong) {
			t.Errorf("%s printed a password:\n%s", what, res)
		}
	}

	res := h.run(install("--cert-dir", reg.CertDir, "--authfile", reg.AuthFile(t, reg.Addr, user, wrong))...)
	t.Logf("wrong password: exit %d: %s", res.code, firstLine(res.stderr))
	if res.code == 0 || !strings.Contains(res.stderr, reg.Addr) {
		t.Errorf("install with a wrong password: want a failure naming %s\n%s", reg.Addr, res)
	}
	noSecret("install with a wrong password", res)
	res = h.run(install("--cert-dir", reg.CertDir)...)
	t.Logf("no credentials: exit %d: %s", res.code, firstLine(res.stderr))
	if res.code == 0 || !strings.Contains(res.stderr, reg.Addr) {
		t.Errorf("install without credentials: want a failure naming %s\n%s", reg.Addr, res)
	}
	res = h.run(install("--authfile", osAuth)...)
	t.Logf("no CA: exit %d: %s", res.code, firstLine(res.stderr))
	if res.code == 0 || !strings.Contains(res.stderr, reg.Addr) || !strings.Contains(res.stderr, "certificate") {
		t.Errorf("install without the registry's CA: want a certificate failure naming %s\n%s", reg.Addr, res)
	}
	noSecret("install without the CA", res)
	if d := h.deployments("default"); len(d) != 0 {
		t.Fatalf("failed installs left deployments %v", d)
	}

	res = h.ok(install("--cert-dir", reg.CertDir, "--authfile", osAuth)...)
	noSecret("install", res)
	if byName(h.list(), app) == nil {
		t.Errorf("the bound image was not pulled with its quadlet's AuthFile=")
	}

	reg.Push(t, osVersion(t, "2", []harness.Bound{bound}, harness.Layer{etcFile("version", "2\n")}), "os/host:stable", "gzip")
	h.env = append(h.env, "REGISTRY_AUTH_FILE="+osAuth)
	h.ok("upgrade", "--quiet", "--cert-dir", reg.CertDir, "--signature-policy", h.policy)
	if v := versionOf(h.status(), "staged"); v != "2" {
		t.Errorf("upgrade with REGISTRY_AUTH_FILE: staged %q, want 2", v)
	}
}
