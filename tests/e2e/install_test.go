package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bootstore/bootstore/pkg/status/statustest"
	"github.com/bootstore/bootstore/tests/harness"
)

// installArgs are the flags every install from the test registry needs.
func (h *host) installArgs(image string, args ...string) []string {
	return append(append([]string{"install", "to-filesystem", "--tls-verify=false", "--signature-policy", h.policy,
		"--source-imgref", image}, args...), h.root)
}

// deployments lists ostree/deploy/<stateroot>/deploy without origins.
func (h *host) deployments(stateroot string) []string {
	entries, _ := os.ReadDir(filepath.Join(h.root, "ostree/deploy", stateroot, "deploy"))
	var out []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".origin") {
			out = append(out, e.Name())
		}
	}
	return out
}

// kargsImage is an OS image with a kargs.d file and one bound image.
func pushInstallFixture(t *testing.T, reg *harness.Registry) (osRef, appRef string) {
	t.Helper()
	reg.Push(t, harness.AppImage(t, "app1"), "apps/app1:1", "gzip")
	appRef = reg.Ref("apps/app1:1")
	kargs := harness.WithParents(harness.Layer{
		{Path: "/usr/lib/bootc/kargs.d/10-console.toml", Type: harness.File, Data: []byte("kargs = [\"console=ttyS0\", \"quiet\"]\n")},
		{Path: "/usr/lib/bootc/kargs.d/20-other-arch.toml", Type: harness.File, Data: []byte("kargs = [\"nope\"]\nmatch-architectures = [\"s390x\"]\n")},
		{Path: "/var/lib/seeded", Type: harness.File, Data: []byte("from the image\n")},
		{Path: "/etc/motd", Type: harness.File, Data: []byte("welcome\n")},
	})
	img := harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "1", BoundImages: []harness.Bound{harness.BoundImage("app1", appRef)},
		ExtraLayers: []harness.Layer{kargs}})
	reg.Push(t, img, "os:v1", "gzip")
	return reg.Ref("os:v1"), appRef
}

func TestInstallUnifiedThenStatus(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	osRef, appRef := pushInstallFixture(t, reg)
	h.ok(h.installArgs(osRef, "--experimental-unified-storage", "--karg", "root=LABEL=root", "--karg", "rw")...)

	deps := h.deployments("default")
	if len(deps) != 1 {
		t.Fatalf("want one deployment, got %v", deps)
	}
	dep := filepath.Join(h.root, "ostree/deploy/default/deploy", deps[0])
	origin, err := os.ReadFile(dep + ".origin")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"container-image-reference=ostree-unverified-registry:" + osRef, "storage=unified", "image-id=" + strings.Split(deps[0], ".")[0]} {
		if !strings.Contains(string(origin), want) {
			t.Errorf("origin lacks %q:\n%s", want, origin)
		}
	}
	entries, _ := filepath.Glob(filepath.Join(h.root, "boot/loader/entries/*.conf"))
	if len(entries) != 1 {
		t.Fatalf("want one boot entry, got %v", entries)
	}
	entry, _ := os.ReadFile(entries[0])
	// ostree= names the deployment's boot link (ostree-prepare-root wants
	// a symlink), which resolves to the deployment.
	bootLink := "/ostree/boot.0/default/" + strings.Replace(deps[0], ".", "/", 1)
	if target, err := os.Readlink(filepath.Join(h.root, bootLink)); err != nil || target != "../../../deploy/default/deploy/"+deps[0] {
		t.Errorf("boot link %s -> %q, %v", bootLink, target, err)
	}
	for _, want := range []string{"root=LABEL=root rw console=ttyS0 quiet", "ostree=" + bootLink, "linux /ostree/default-", "initrd /ostree/default-"} {
		if !strings.Contains(string(entry), want) {
			t.Errorf("boot entry lacks %q:\n%s", want, entry)
		}
	}
	if strings.Contains(string(entry), "nope") {
		t.Errorf("kargs.d for another architecture was applied:\n%s", entry)
	}
	if link, err := os.Readlink(filepath.Join(dep, "usr/lib/bootc/storage")); err != nil || link != "/sysroot/ostree/bootc/storage" {
		t.Errorf("/usr/lib/bootc/storage -> %q, %v", link, err)
	}
	if data, err := os.ReadFile(filepath.Join(dep, "usr/etc/motd")); err != nil || string(data) != "welcome\n" {
		t.Errorf("/usr/etc keeps the image's /etc: %q, %v", data, err)
	}
	if data, err := os.ReadFile(filepath.Join(h.root, "ostree/deploy/default/var/lib/seeded")); err != nil || string(data) != "from the image\n" {
		t.Errorf("the stateroot's /var was not seeded from the image: %q, %v", data, err)
	}
	if varEntries, _ := os.ReadDir(filepath.Join(dep, "var")); len(varEntries) != 0 {
		t.Errorf("the deployment's /var should be an empty mount point: %v", varEntries)
	}
	infos := h.list()
	if byName(infos, osRef) == nil || byName(infos, appRef) == nil {
		t.Errorf("unified install keeps the OS image and its bound image in the store: %+v", infos)
	}

	js := h.ok("status", "--format", "json").stdout
	statustest.ValidateHost(t, []byte(js))
	for _, want := range []string{`"apiVersion": "org.containers.bootc/v1"`, `"kind": "BootcHost"`, `"transport": "registry"`, `"storage": "unified"`, `"version": "1"`} {
		if !strings.Contains(js, want) {
			t.Errorf("status --format json lacks %s:\n%s", want, js)
		}
	}
	yml := h.ok("status", "--format", "yaml").stdout
	statustest.ValidateHost(t, statustest.YAMLToJSON(t, []byte(yml)))
	human := h.ok("status").stdout
	if !strings.Contains(human, "Booted image: "+osRef) || !strings.Contains(human, "unified") {
		t.Errorf("status:\n%s", human)
	}
}

func TestInstallSplitKeepsOnlyBoundImages(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	osRef, appRef := pushInstallFixture(t, reg)
	h.ok(h.installArgs(osRef)...)
	infos := h.list()
	if len(infos) != 1 || byName(infos, appRef) == nil {
		t.Errorf("a split host's store holds only the bound images, got %+v", infos)
	}
	if js := h.ok("status", "--format", "json").stdout; !strings.Contains(js, `"storage": "split"`) {
		t.Errorf("status should say split:\n%s", js)
	}
	leftovers, _ := filepath.Glob(filepath.Join(h.root, "ostree/bootc/.split-*"))
	if len(leftovers) != 0 {
		t.Errorf("the temporary store was not removed: %v", leftovers)
	}
}

func TestInstallRefusesBadInput(t *testing.T) {
	reg := harness.StartRegistry(t)
	osRef, _ := pushInstallFixture(t, reg)

	h := newHost(t)
	writeFile(t, filepath.Join(h.root, "precious"), "keep me")
	h.expectFailure(7, []string{"precious", "--replace=wipe"}, h.installArgs(osRef, "--experimental-unified-storage")...)
	if _, err := os.Stat(filepath.Join(h.root, "precious")); err != nil {
		t.Errorf("a refused install touched the root: %v", err)
	}
	h.ok(h.installArgs(osRef, "--experimental-unified-storage", "--replace=wipe")...)

	// An image without /usr: a clear error, no deployment, the store intact.
	noUsr := harness.Image{Layers: []harness.Layer{harness.WithParents(harness.Layer{{Path: "/etc/hostname", Type: harness.File, Data: []byte("x\n")}})},
		Labels: map[string]string{"containers.bootc": "1"}}
	reg.Push(t, noUsr, "nousr:1", "gzip")
	h2 := newHost(t)
	h2.expectFailure(3, []string{"no /usr", reg.Ref("nousr:1")}, h2.installArgs(reg.Ref("nousr:1"), "--experimental-unified-storage")...)
	if deps := h2.deployments("default"); len(deps) != 0 {
		t.Errorf("a failed install left deployments: %v", deps)
	}
	if infos := h2.list(); len(infos) != 1 || !slices.Contains(infos[0].Names, reg.Ref("nousr:1")) {
		t.Errorf("the store should keep the pulled image intact: %+v", infos)
	}
}
