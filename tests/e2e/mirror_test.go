package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/bootstore/bootstore/tests/harness"
)

// mirrorFixture pushes the image-set fixture (an OS image and two bound
// images, all named after primary) to primary and, with the same digests,
// to each copy.
func mirrorFixture(t *testing.T, primary *harness.Registry, copies ...*harness.Registry) (osRef string, apps []string) {
	t.Helper()
	osRef, apps = imageSetFixture(t, primary, "os:v1", "1")
	for _, c := range copies {
		for _, repo := range []string{"apps/app1:1", "apps/app2:1", "os:v1"} {
			copyImage(t, primary, c, repo)
		}
	}
	return osRef, apps
}

// copyImage copies repo:tag from one registry to another unchanged (same
// manifest digest), as a mirror sync would.
func copyImage(t *testing.T, from, to *harness.Registry, repoTag string) {
	t.Helper()
	if _, err := (harness.Skopeo{}).Run(t, "copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
		"docker://"+from.DirectRef(repoTag), "docker://"+to.DirectRef(repoTag)); err != nil {
		t.Fatal(err)
	}
}

// registries.conf mirrors serve the OS image and every bound image; when the
// primary is down the mirror serves everything, and when the mirror is down
// the primary does.
func TestMirrorsServeWhenEitherSideIsDown(t *testing.T) {
	harness.RequireCommand(t, "skopeo")
	primary := harness.StartRegistry(t)
	mirror := harness.StartRegistry(t)
	osRef, apps := mirrorFixture(t, primary, mirror)
	h := newHost(t)
	h.env = append(h.env, "CONTAINERS_REGISTRIES_CONF="+harness.MirrorsConf(t, primary.Addr, mirror.Addr))

	primary.GoDown()
	primary.ResetStats()
	mirror.ResetStats()
	h.ok("install", "to-filesystem", "--signature-policy", h.policy, "--source-imgref", osRef, "--experimental-unified-storage", h.root)
	if s := primary.Stats(); s.BlobGETs != 0 || s.ManifestGETs != 0 {
		t.Errorf("the primary is down, yet answered %+v", s)
	}
	if s := mirror.Stats(); s.ManifestGETs < 3 || s.BlobGETs == 0 {
		t.Errorf("the mirror should have served the OS image and both bound images: %+v", s)
	}
	infos := h.list()
	for _, ref := range append([]string{osRef}, apps...) {
		if byName(infos, ref) == nil {
			t.Errorf("%s is not in the store under its primary name: %+v", ref, infos)
		}
	}

	// v2 only on the primary; the mirror dies: the primary serves.
	primary.ClearFault()
	primary.Push(t, harness.AppImage(t, "app3"), "apps/app3:1", "gzip")
	bound2 := []harness.Bound{harness.BoundImage("app1", apps[0]), harness.BoundImage("app3", primary.Ref("apps/app3:1"))}
	primary.Push(t, osVersion(t, "2", bound2, harness.Layer{etcFile("version", "2\n")}), "os:v1", "gzip")
	mirror.GoDown()
	primary.ResetStats()
	h.ok("upgrade", "--signature-policy", h.policy)
	if st := h.status(); versionOf(st, "staged") != "2" {
		t.Errorf("upgrade with the mirror down: staged %q, want 2", versionOf(st, "staged"))
	}
	if s := primary.Stats(); s.BlobGETs == 0 {
		t.Errorf("with the mirror down the primary should have served the upgrade: %+v", s)
	}
}

// A pull-through cache (docker-registry in proxy mode) in front of the
// primary: the second host's install is served from the cache without a
// blob from the primary. (distribution 2.8's proxy fetches each blob twice
// from upstream on a miss, once to serve and once to store, so the first
// host costs the primary up to twice the bytes the cache served.)
func TestPullThroughCacheServesSecondHost(t *testing.T) {
	primary := harness.StartRegistry(t)
	// Bound images that share no blob: docker-registry 2.8's proxy keeps
	// only one of two concurrent requests for one blob, and bootstore
	// pulls bound images concurrently, so shared blobs would make the
	// second host's count depend on timing.
	apps := []string{primary.Ref("apps/app1:1"), primary.Ref("apps/app2:1")}
	primary.Push(t, harness.AppImage(t, "app1"), "apps/app1:1", "gzip")
	primary.Push(t, harness.AppImage(t, "app2"), "apps/app2:1", "gzip")
	bound := []harness.Bound{harness.BoundImage("app1", apps[0]), harness.BoundContainer("app2", apps[1])}
	primary.Push(t, osVersion(t, "1", bound, harness.Layer{etcFile("version", "1\n")}), "os:v1", "gzip")
	osRef := primary.Ref("os:v1")
	cache := harness.StartPullThroughCache(t, primary.Addr)
	conf := harness.MirrorsConf(t, primary.Addr, cache.Addr)

	var firstBytes int64
	for i := 0; i < 2; i++ {
		primary.ResetStats()
		cache.ResetStats()
		h := newHost(t)
		h.ok("install", "to-filesystem", "--registries-conf", conf, "--signature-policy", h.policy, "--source-imgref", osRef, "--experimental-unified-storage", h.root)
		for _, ref := range apps {
			if byName(h.list(), ref) == nil {
				t.Errorf("host %d: bound image %s missing", i, ref)
			}
		}
		p, c := primary.Stats(), cache.Stats()
		t.Logf("host %d: primary served %d blob bytes in %d requests; the cache served %d blob bytes", i, p.BlobBytes, p.Requests, c.BlobBytes)
		if c.BlobBytes == 0 {
			t.Errorf("host %d: the cache served no blob", i)
		}
		switch i {
		case 0:
			// docker-registry's proxy stores a blob in the background, with a
			// fetch of its own beside the one it streams to the client: the
			// next host is only served from the cache once those are done.
			p = waitQuiet(t, primary)
			firstBytes = p.BlobBytes
			if p.BlobBytes < c.BlobBytes {
				t.Errorf("the cache served %d bytes, but fetched only %d from the primary", c.BlobBytes, p.BlobBytes)
			}
		case 1:
			if p.BlobGETs != 0 {
				t.Errorf("the second host made the cache fetch %d blobs (%d bytes) from the primary again; the first fetched %d bytes",
					p.BlobGETs, p.BlobBytes, firstBytes)
			}
		}
	}
}

// waitQuiet waits until reg has served no blob for a second (at most 30 s)
// and returns its counts.
func waitQuiet(t *testing.T, reg *harness.Registry) harness.Counts {
	t.Helper()
	last, since := reg.Stats(), time.Now()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		c := reg.Stats()
		if c.BlobGETs != last.BlobGETs || c.BlobBytes != last.BlobBytes {
			last, since = c, time.Now()
		} else if time.Since(since) > time.Second {
			return c
		}
	}
	t.Fatalf("the registry kept serving blobs for 30 s")
	return last
}

// A mirror serving other content for a name by digest is refused with an
// error naming the image, whether or not the store already holds that other
// content; nothing is added to the store.
func TestMirrorServingAnotherDigestIsRefused(t *testing.T) {
	harness.RequireCommand(t, "skopeo")
	primary := harness.StartRegistry(t)
	mirror := harness.StartRegistry(t)
	appDigest := primary.Push(t, harness.AppImage(t, "pinned"), "apps/pinned:1", "gzip")
	pinned := primary.Ref("apps/pinned@" + appDigest.String())
	primary.Push(t, osVersion(t, "1", []harness.Bound{harness.BoundImage("pinned", pinned)}, harness.Layer{etcFile("version", "1\n")}), "os:v1", "gzip")
	copyImage(t, primary, mirror, "os:v1")
	mirror.Push(t, harness.AppImage(t, "impostor"), "apps/pinned:impostor", "gzip")
	mirror.ServeManifestFor(appDigest.String(), "apps/pinned", "impostor")

	h := newHost(t)
	h.env = append(h.env, "CONTAINERS_REGISTRIES_CONF="+harness.MirrorsConf(t, primary.Addr, mirror.Addr))
	res := h.expectFailure(1, []string{pinned, "digest"}, "image", "pull", "--signature-policy", h.policy, primary.Ref("os:v1"))
	if strings.Contains(res.stderr, "panic") {
		t.Fatalf("%s", res)
	}
	for _, info := range h.list() {
		if len(info.Roles) != 0 {
			t.Errorf("a refused bound image left a recorded host: %+v", info)
		}
	}
	if orphans := h.orphanLayers(); len(orphans) != 0 {
		t.Errorf("orphan layers after the refusal: %v", orphans)
	}

	// The impostor already in the store does not let the name through.
	h2 := newHost(t)
	h2.env = h.env
	h2.ok("image", "pull", "--tls-verify=false", "--signature-policy", h.policy, "--allow-non-bootable", mirror.Ref("apps/pinned:impostor"))
	h2.expectFailure(1, []string{pinned, "digest"}, "image", "pull", "--signature-policy", h.policy, primary.Ref("os:v1"))
	if info := byName(h2.list(), pinned); info != nil {
		t.Errorf("the impostor was named %s: %+v", pinned, info)
	}
}

// A mirror dying in the middle of a layer: the pull is retried and the
// primary serves it, within one run.
func TestMirrorDyingMidTransferFailsOverInOneRun(t *testing.T) {
	harness.RequireCommand(t, "skopeo")
	primary := harness.StartRegistry(t)
	mirror := harness.StartRegistry(t)
	primary.Push(t, bigOSImage(t, 4<<20), "os:v1", "gzip")
	copyImage(t, primary, mirror, "os:v1")
	h := newHost(t)
	h.env = append(h.env, "CONTAINERS_REGISTRIES_CONF="+harness.MirrorsConf(t, primary.Addr, mirror.Addr))

	mirror.DieMidBlob(1 << 20)
	primary.ResetStats()
	res := h.ok("image", "pull", "--signature-policy", h.policy, primary.Ref("os:v1"))
	if !strings.Contains(res.stderr, "Retrying "+"docker://"+primary.Ref("os:v1")) {
		t.Errorf("the pull should say it retried:\n%s", res)
	}
	if s := primary.Stats(); s.BlobBytes < 4<<20 {
		t.Errorf("the primary should have served the big layer after the mirror died: %+v", s)
	}
	if byName(h.list(), primary.Ref("os:v1")) == nil {
		t.Errorf("the image is not in the store")
	}
	if orphans := h.orphanLayers(); len(orphans) != 0 {
		t.Errorf("the broken attempt left layers: %v", orphans)
	}
}
