package e2e

import (
	"compress/gzip"

	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/bootstore/bootstore/tests/harness"
)

// physicallyBoundDir is where OS images declare their embedded apps.
const physicallyBoundDir = "/usr/lib/bootc/physically-bound-images.d"

// embeddedStore is the default path of the embedded store in the OS image.
const embeddedStore = "usr/lib/containers/storage"

// twoLayerApp is an app of two layers: the shared harness.BaseLayer, then its
// own files (so apps built with it share their first layer).
func twoLayerApp(t *testing.T, name, content string) harness.Image {
	t.Helper()
	own := harness.WithParents(harness.Layer{
		{Path: "/usr/share/harness-app/" + name, Type: harness.File, Data: []byte(content)},
		{Path: "/usr/share/harness-app/" + name + ".link", Type: harness.Symlink, Link: name},
		{Path: "/usr/share/harness-app/" + name + ".hard", Type: harness.Hardlink, Link: "/usr/share/harness-app/" + name},
	})
	return harness.Image{Layers: []harness.Layer{harness.WithParents(harness.BaseLayer(t)), own},
		Labels: map[string]string{"org.opencontainers.image.title": name}, Cmd: []string{"/usr/bin/true"}}
}

// embedBase is a bootable OS image of version ver whose
// physically-bound-images.d names each of refs through a .image quadlet.
func embedBase(t *testing.T, ver string, refs ...string) harness.Image {
	t.Helper()
	var extra harness.Layer
	for i, ref := range refs {
		q := harness.QuadletDir + "/embedded" + string(rune('a'+i)) + ".image"
		extra = append(extra,
			harness.Entry{Path: q, Type: harness.File, Data: []byte(harness.ImageQuadlet(ref))},
			harness.Entry{Path: physicallyBoundDir + "/" + filepath.Base(q), Type: harness.Symlink, Link: q})
	}
	extra = append(extra, harness.Entry{Path: "/usr/share/os/version", Type: harness.File, Data: []byte(ver + "\n")})
	return harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: ver, ExtraLayers: []harness.Layer{harness.WithParents(extra)}})
}

func (h *host) embedArgs(args ...string) []string {
	return append([]string{"image", "embed", "--tls-verify=false", "--signature-policy", h.policy}, args...)
}

// embedDigest is the manifest digest `image embed` printed last.
func embedDigest(t *testing.T, res result) string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	d, _, _ := strings.Cut(lines[len(lines)-1], " ")
	if !strings.HasPrefix(d, "sha256:") {
		t.Fatalf("image embed printed no digest:\n%s", res)
	}
	return d
}

// layoutManifest reads the manifest tagged tag in the OCI layout dir.
func layoutManifest(t *testing.T, dir, tag string) imgspecv1.Manifest {
	t.Helper()
	var idx imgspecv1.Index
	readJSONFile(t, filepath.Join(dir, "index.json"), &idx)
	for _, m := range idx.Manifests {
		if m.Annotations[imgspecv1.AnnotationRefName] == tag {
			var man imgspecv1.Manifest
			readJSONFile(t, filepath.Join(dir, "blobs", m.Digest.Algorithm().String(), m.Digest.Encoded()), &man)
			return man
		}
	}
	t.Fatalf("%s has no image tagged %s", dir, tag)
	return imgspecv1.Manifest{}
}

func layerDigests(ls []imgspecv1.Descriptor) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Digest.String())
	}
	return out
}

// Building twice gives the same image; the apps' layers do not depend on the
// base, on the order of the apps or on where they were named (argument or
// quadlet); apps share their common layer.
func TestEmbedIsDeterministic(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	reg.Push(t, twoLayerApp(t, "app1", "one\n"), "apps/app1:1", "gzip")
	reg.Push(t, twoLayerApp(t, "app2", "two\n"), "apps/app2:1", "gzip")
	app1, app2 := reg.Ref("apps/app1:1"), reg.Ref("apps/app2:1")
	reg.Push(t, embedBase(t, "1", app2), "os:1", "gzip")
	reg.Push(t, embedBase(t, "2"), "os:2", "gzip")
	baseLayers := 3

	dir := t.TempDir()
	var digests []string
	for _, out := range []string{"a", "b"} {
		res := h.ok(h.embedArgs(reg.Ref("os:1"), app1, "--output", "oci:"+filepath.Join(dir, out)+":os")...)
		digests = append(digests, embedDigest(t, res))
	}
	if digests[0] != digests[1] {
		t.Fatalf("two builds of the same image differ: %s and %s", digests[0], digests[1])
	}
	manA := layoutManifest(t, filepath.Join(dir, "a"), "os")
	// 3 base layers, 3 distinct app layers (the shared one once), 1 metadata layer.
	if len(manA.Layers) != baseLayers+3+1 {
		t.Fatalf("want %d layers, got %d: %v", baseLayers+4, len(manA.Layers), layerDigests(manA.Layers))
	}

	// Another base, apps in the other order, both as arguments.
	res := h.ok(h.embedArgs(reg.Ref("os:2"), app2, app1, "--output", "oci:"+filepath.Join(dir, "c")+":os")...)
	if embedDigest(t, res) == digests[0] {
		t.Fatal("a different base gave the same image")
	}
	manC := layoutManifest(t, filepath.Join(dir, "c"), "os")
	if slices.Equal(layerDigests(manA.Layers[:baseLayers]), layerDigests(manC.Layers[:baseLayers])) {
		t.Fatal("the bases' layers should differ")
	}
	if a, c := layerDigests(manA.Layers[baseLayers:]), layerDigests(manC.Layers[baseLayers:]); !slices.Equal(a, c) {
		t.Errorf("the embedded layers depend on the base or the order of the apps:\n%v\n%v", a, c)
	}
	// The base's own layers are kept as they are.
	if man := layoutManifest(t, filepath.Join(dir, "c"), "os"); man.Layers[0].Digest != manA.Layers[0].Digest {
		t.Errorf("the base's shared first layer was rewritten")
	}
}

// After install, podman runs every embedded app from the deployment's store
// with no request to any registry.
func TestEmbeddedAppsRunWithoutPull(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	reg.Push(t, twoLayerApp(t, "app1", "one\n"), "apps/app1:1", "gzip")
	reg.Push(t, twoLayerApp(t, "app2", "two\n"), "apps/app2:1", "zstd")
	app1, app2 := reg.Ref("apps/app1:1"), reg.Ref("apps/app2:1")
	reg.Push(t, embedBase(t, "1", app2), "os:1", "gzip")
	h.ok(h.embedArgs(reg.Ref("os:1"), app1, "--output", "docker://"+reg.Ref("os:embedded"))...)
	h.ok(h.installArgs(reg.Ref("os:embedded"), "--experimental-unified-storage")...)
	deps := h.deployments("default")
	if len(deps) != 1 {
		t.Fatalf("want one deployment, got %v", deps)
	}
	storeDir := filepath.Join(h.deploymentDir(deps[0]), embeddedStore)

	p := harness.NewPodman(t, "overlay")
	p.StorageOpts = []string{"additionalimagestore=" + storeDir}
	reg.ResetStats()
	out, err := p.Run(t, "images", "--format", "{{.Repository}}:{{.Tag}}")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{app1, app2} {
		if !strings.Contains(out, want) {
			t.Errorf("podman images does not list %s:\n%s", want, out)
		}
	}
	for app, want := range map[string]string{app1: "one", app2: "two"} {
		name := strings.TrimSuffix(filepath.Base(app), ":1")
		out, err := p.Run(t, "run", "--rm", "--pull=never", app, "cat", "/usr/share/harness-app/"+name,
			"/usr/share/harness-app/"+name+".link", "/usr/share/harness-app/"+name+".hard")
		if err != nil {
			t.Fatalf("running embedded %s: %v", app, err)
		}
		if strings.TrimSpace(out) != strings.Repeat(want+"\n", 2)+want {
			t.Errorf("%s printed %q", app, out)
		}
	}
	if st := reg.Stats(); st.Requests != 0 {
		t.Errorf("running embedded apps reached the registry: %d requests", st.Requests)
	}

	// podman rebuilds each layer's exact tar stream from the shipped
	// tar-split: every saved layer, uncompressed, is its DiffID.
	saved := filepath.Join(t.TempDir(), "saved")
	if out, err := p.Run(t, "save", "--format", "oci-dir", "-o", saved, app1); err != nil {
		t.Fatalf("podman save %s: %v\n%s", app1, err, out)
	}
	var idx imgspecv1.Index
	readJSONFile(t, filepath.Join(saved, "index.json"), &idx)
	var man imgspecv1.Manifest
	readJSONFile(t, filepath.Join(saved, "blobs/sha256", idx.Manifests[0].Digest.Encoded()), &man)
	var cfg imgspecv1.Image
	readJSONFile(t, filepath.Join(saved, "blobs/sha256", man.Config.Digest.Encoded()), &cfg)
	if len(man.Layers) != 2 || len(cfg.RootFS.DiffIDs) != 2 {
		t.Fatalf("podman save: %d layers, %d DiffIDs", len(man.Layers), len(cfg.RootFS.DiffIDs))
	}
	for i, l := range man.Layers {
		if d := uncompressedDigest(t, filepath.Join(saved, "blobs/sha256", l.Digest.Encoded())); d != cfg.RootFS.DiffIDs[i] {
			t.Errorf("saved layer %d (%s) uncompressed is %s, its DiffID %s", i, l.MediaType, d, cfg.RootFS.DiffIDs[i])
		}
	}
}

// Bad input: each failure names the app (or the base) and leaves neither
// the output nor anything in the work directory.
func TestEmbedRefusesBadInput(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	reg.Push(t, twoLayerApp(t, "app1", "one\n"), "apps/app1:1", "gzip")
	reg.Push(t, twoLayerApp(t, "app2", "two\n"), "apps/app2:1", "gzip")
	whiteout := twoLayerApp(t, "wh", "x\n")
	whiteout.Layers = append(whiteout.Layers, harness.Layer{{Path: "/usr/bin/cat", Type: harness.Whiteout}})
	reg.Push(t, whiteout, "apps/whiteout:1", "gzip")
	opaque := twoLayerApp(t, "opq", "x\n")
	opaque.Layers = append(opaque.Layers, harness.Layer{{Path: "/usr/share", Type: harness.Opaque}})
	reg.Push(t, opaque, "apps/opaque:1", "gzip")
	dev := twoLayerApp(t, "dev", "x\n")
	dev.Layers[1] = append(dev.Layers[1], harness.Entry{Path: "/usr/share/harness-app/null", Type: harness.CharDev})
	reg.Push(t, dev, "apps/dev:1", "gzip")
	reg.Push(t, embedBase(t, "1"), "os:1", "gzip")
	occupied := embedBase(t, "1")
	occupied.Layers = append(occupied.Layers, harness.WithParents(harness.Layer{
		{Path: "/" + embeddedStore + "/overlay-images/images.json", Type: harness.File, Data: []byte("[]")}}))
	reg.Push(t, occupied, "os:occupied", "gzip")
	big := harness.BigImage(t, 24<<20, 20, 11)
	reg.Push(t, big, "apps/big:1", "gzip")
	base := reg.Ref("os:1")

	work := harness.LoopFS(t, 24<<20, harness.MkfsExt4...)
	outDir := t.TempDir()
	defer func(orig *testing.T) { h.t = orig }(h.t)
	for _, tc := range []struct {
		name  string
		code  int
		names []string
		args  []string
	}{
		{"whiteout", 1, []string{reg.Ref("apps/whiteout:1"), "whiteout", ".wh.cat"}, []string{base, reg.Ref("apps/app1:1"), reg.Ref("apps/whiteout:1")}},
		{"opaque", 1, []string{reg.Ref("apps/opaque:1"), "whiteout", ".wh..wh..opq"}, []string{base, reg.Ref("apps/opaque:1")}},
		{"device", 1, []string{reg.Ref("apps/dev:1"), "0:0 character device"}, []string{base, reg.Ref("apps/dev:1")}},
		{"clash", 2, []string{reg.Ref("apps/app1:1"), "apps/app2:1", "app name clash"},
			[]string{base, reg.Ref("apps/app1:1"), reg.Ref("apps/app1:1") + "=docker://" + reg.Ref("apps/app2:1")}},
		{"no space", 4, []string{reg.Ref("apps/big:1"), "insufficient"}, []string{base, reg.Ref("apps/app1:1"), reg.Ref("apps/big:1"), "--tmpdir", work}},
		{"occupied store path", 1, []string{"/" + embeddedStore + "/overlay-images", "--store-path"},
			[]string{reg.Ref("os:occupied"), reg.Ref("apps/app1:1")}},
		{"no apps", 1, []string{"no apps to embed", physicallyBoundDir}, []string{base}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(outDir, strings.ReplaceAll(tc.name, " ", "-"))
			h.t = t
			h.expectFailure(tc.code, tc.names, h.embedArgs(append(tc.args, "--tmpdir", work, "--output", "oci:"+out+":os")...)...)
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("a failed embed left %s", out)
			}
			if left, _ := os.ReadDir(work); len(left) > 1 { // lost+found
				t.Errorf("a failed embed left %v in its work directory", left)
			}
		})
	}
}

// shippedStorageConf is contrib/storage/storage.conf with its host paths
// mapped into the test host: the unified store and the deployment's
// embedded store.
func shippedStorageConf(t *testing.T, h *host, deployment, graphRoot, runRoot string) string {
	t.Helper()
	data, err := os.ReadFile("../../contrib/storage/storage.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.NewReplacer(`"/usr/lib/bootc/storage"`, `"`+h.storageRoot()+`"`,
		`"/usr/lib/containers/storage"`, `"`+filepath.Join(deployment, embeddedStore)+`"`,
		`"/var/lib/containers/storage"`, `"`+graphRoot+`"`, `"/run/containers/storage"`, `"`+runRoot+`"`).Replace(string(data))
	if !strings.Contains(conf, filepath.Join(deployment, embeddedStore)) {
		t.Fatalf("contrib/storage/storage.conf does not name /%s:\n%s", embeddedStore, data)
	}
	p := filepath.Join(t.TempDir(), "storage.conf")
	writeFile(t, p, conf)
	return p
}

// podmanWithConf is a Podman configured by the storage.conf that conf
// writes for the given graph and run roots. podman 4.3.1 drops storage.conf's
// driver options (additionalimagestores among them) when --root, --runroot
// or --storage-driver is given, so none is. Cleanup removes its containers
// and unmounts what it left.
func podmanWithConf(t *testing.T, conf func(graphRoot, runRoot string) string) harness.Podman {
	t.Helper()
	harness.RequireCommand(t, "podman")
	graphRoot := filepath.Join(t.TempDir(), "root")
	runRoot, err := os.MkdirTemp("", "pr") // podman refuses long run roots
	if err != nil {
		t.Fatal(err)
	}
	p := harness.Podman{Env: []string{"CONTAINERS_STORAGE_CONF=" + conf(graphRoot, runRoot)}}
	t.Cleanup(func() {
		p.Run(t, "rm", "--all", "--force", "--time", "0")
		time.Sleep(time.Second) // conmon's delayed cleanup re-mounts
		harness.UnmountUnder(runRoot)
		harness.UnmountUnder(graphRoot)
		os.RemoveAll(runRoot)
	})
	return p
}

// readOnlyBind makes dir read-only, as /usr is on a booted host.
func readOnlyBind(t *testing.T, dir string) {
	t.Helper()
	if out, err := exec.Command("mount", "--bind", dir, dir).CombinedOutput(); err != nil {
		t.Fatalf("mount --bind %s: %v: %s", dir, err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	if out, err := exec.Command("mount", "-o", "remount,ro,bind", dir).CombinedOutput(); err != nil {
		t.Fatalf("remount ro %s: %v: %s", dir, err, out)
	}
}

// An app both embedded and logically bound is not pulled into the unified
// store; podman with the shipped storage.conf runs it (and every embedded
// app) from the read-only deployment; image list shows it as embedded with
// its bytes, and gc keeps it.
func TestEmbeddedAppsOnTheHost(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	reg.Push(t, twoLayerApp(t, "app1", "one\n"), "apps/app1:1", "gzip")
	reg.Push(t, twoLayerApp(t, "app2", "two\n"), "apps/app2:1", "gzip")
	reg.Push(t, harness.AppImage(t, "app3"), "apps/app3:1", "gzip")
	app1, app2, app3 := reg.Ref("apps/app1:1"), reg.Ref("apps/app2:1"), reg.Ref("apps/app3:1")
	base := embedBase(t, "1", app2)
	// app2 is also a logically bound image; app3 only a bound one.
	base.Layers = append(base.Layers, harness.WithParents(harness.Layer{
		{Path: harness.QuadletDir + "/app2.container", Type: harness.File, Data: []byte(harness.ContainerQuadlet(app2))},
		{Path: harness.BoundImagesDir + "/app2.container", Type: harness.Symlink, Link: harness.QuadletDir + "/app2.container"},
		{Path: harness.QuadletDir + "/app3.image", Type: harness.File, Data: []byte(harness.ImageQuadlet(app3))},
		{Path: harness.BoundImagesDir + "/app3.image", Type: harness.Symlink, Link: harness.QuadletDir + "/app3.image"},
	}))
	reg.Push(t, base, "os:1", "gzip")
	h.ok(h.embedArgs(reg.Ref("os:1"), app1, "--output", "docker://"+reg.Ref("os:embedded"))...)
	h.ok(h.installArgs(reg.Ref("os:embedded"), "--experimental-unified-storage")...)
	deps := h.deployments("default")
	if len(deps) != 1 {
		t.Fatalf("want one deployment, got %v", deps)
	}
	dep := h.deploymentDir(deps[0])

	_, images := h.storeContents()
	for _, img := range images {
		if slices.Contains(img.Names, app2) {
			t.Errorf("the unified store holds a second copy of the embedded and bound %s", app2)
		}
	}
	found := false
	for _, img := range images {
		found = found || slices.Contains(img.Names, app3)
	}
	if !found {
		t.Errorf("the bound (not embedded) %s was not pulled", app3)
	}

	list := h.list()
	for _, app := range []string{app1, app2} {
		info := byName(list, app)
		if info == nil || !slices.Contains(info.Roles, "embedded") || info.Size <= 0 {
			t.Errorf("image list: want %s with role embedded and its size, got %+v", app, info)
		}
	}
	h.ok("gc")

	readOnlyBind(t, filepath.Join(dep, embeddedStore))
	p := podmanWithConf(t, func(graphRoot, runRoot string) string { return shippedStorageConf(t, h, dep, graphRoot, runRoot) })
	reg.ResetStats()
	for app, want := range map[string]string{app1: "one", app2: "two"} {
		name := strings.TrimSuffix(filepath.Base(app), ":1")
		out, err := p.Run(t, "run", "--rm", "--pull=never", app, "cat", "/usr/share/harness-app/"+name)
		if err != nil {
			t.Fatalf("running embedded %s after gc: %v", app, err)
		}
		if strings.TrimSpace(out) != want {
			t.Errorf("%s printed %q", app, out)
		}
	}
	if out, err := p.Run(t, "run", "--rm", "--pull=never", app3, "cat", "/usr/share/harness-app/app3"); err != nil || strings.TrimSpace(out) != "app app3" {
		t.Errorf("the bound image %s from the unified store: %q, %v", app3, out, err)
	}
	if st := reg.Stats(); st.Requests != 0 {
		t.Errorf("running embedded apps reached the registry: %d requests", st.Requests)
	}
}

// registryManifest reads the manifest ref serves.
func registryManifest(t *testing.T, ref string) imgspecv1.Manifest {
	t.Helper()
	out, err := harness.Skopeo{}.Run(t, "inspect", "--raw", "--tls-verify=false", "docker://"+ref)
	if err != nil {
		t.Fatal(err)
	}
	var m imgspecv1.Manifest
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("manifest of %s: %v", ref, err)
	}
	return m
}

// An upgrade between embedded OS images fetches only the layers that
// changed: the base's for a new base, the app's and the metadata layer for a
// new app, never an unchanged app layer. The counting proxy measures it.
func TestEmbedUpgradeFetchesOnlyWhatChanged(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	for _, v := range []string{"1", "2", "3"} {
		reg.Push(t, twoLayerApp(t, "app1", "one v"+v+"\n"), "apps/app1:"+v, "gzip")
	}
	reg.Push(t, twoLayerApp(t, "app2", "two\n"), "apps/app2:1", "gzip")
	for _, v := range []string{"1", "2", "3"} {
		reg.Push(t, embedBase(t, v), "os:"+v, "gzip")
	}
	target := reg.Ref("os:embedded")
	build := func(base, app1 string) imgspecv1.Manifest {
		h.ok(h.embedArgs(reg.Ref(base), reg.Ref(app1), reg.Ref("apps/app2:1"), "--output", "docker://"+target)...)
		return registryManifest(t, target)
	}
	current := build("os:1", "apps/app1:1")
	h.ok(h.installArgs(target, "--experimental-unified-storage")...)

	for _, step := range []struct{ name, base, app1 string }{
		{"base only", "os:2", "apps/app1:1"},
		{"app only", "os:2", "apps/app1:2"},
		{"base and app", "os:3", "apps/app1:3"},
	} {
		next := build(step.base, step.app1)
		old := map[string]bool{}
		for _, l := range current.Layers {
			old[l.Digest.String()] = true
		}
		var want int64
		var changed []string
		for _, l := range next.Layers {
			if !old[l.Digest.String()] {
				want += l.Size
				changed = append(changed, l.Digest.String())
			}
		}
		reg.ResetStats()
		h.ok(h.upgradeArgs()...)
		h.ok("internals", "finalize-staged")
		h.ok("internals", "simulate-reboot")
		st := reg.Stats()
		// The pull reads the config in its preflight and again in the copy.
		configGETs := int64(st.BlobGETsBy[next.Config.Digest])
		t.Logf("%s: upgrade fetched %d bytes (%d blob GETs): changed layers %d bytes + config %d bytes x %d; whole image %d bytes",
			step.name, st.BlobBytes, st.BlobGETs, want, next.Config.Size, configGETs, imageSize(next))
		for _, l := range next.Layers {
			if n := st.BlobGETsBy[l.Digest]; old[l.Digest.String()] && n > 0 || !old[l.Digest.String()] && n != 1 {
				t.Errorf("%s: layer %s (changed: %v) fetched %d times", step.name, l.Digest, !old[l.Digest.String()], n)
			}
		}
		if want += configGETs * next.Config.Size; st.BlobBytes != want || configGETs > 2 {
			t.Errorf("%s: fetched %d bytes, want the %d bytes of the changed layers %v and the config", step.name, st.BlobBytes, want, changed)
		}
		switch step.name {
		case "base only": // the version layer and the extra layer of the base
			if len(changed) != 2 {
				t.Errorf("base only: want the 2 changed base layers to differ, got %v", changed)
			}
		case "app only": // app1's own layer and the metadata layer
			if len(changed) != 2 || changed[1] != next.Layers[len(next.Layers)-1].Digest.String() {
				t.Errorf("app only: want app1's layer and the metadata layer to differ, got %v", changed)
			}
		}
		current = next
	}
}

func imageSize(m imgspecv1.Manifest) int64 {
	n := m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n
}

// uncompressedDigest is the digest of a gzip blob's content.
func uncompressedDigest(t *testing.T, p string) digest.Digest {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	d, err := digest.FromReader(zr)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return d
}
