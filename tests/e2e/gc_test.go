package e2e

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bootstore/bootstore/tests/harness"
)

// storeIDs is the set of image IDs in the store, from the store's own files.
func (h *host) storeIDs() map[string]bool {
	_, images := h.storeContents()
	ids := map[string]bool{}
	for _, img := range images {
		ids[img.ID] = true
	}
	return ids
}

func sortedKeys(m map[string]bool) []string {
	keys := slices.Collect(maps.Keys(m))
	sort.Strings(keys)
	return keys
}

// idOf returns the ID of the image the store names name now.
func (h *host) idOf(name string) string {
	h.t.Helper()
	info := byName(h.list(), name)
	if info == nil {
		h.t.Fatalf("no image named %s in the store", name)
	}
	return info.ID
}

// A host goes through six upgrades in which bound images are added,
// removed and retagged, with a podman container made from an old bound
// image. After each gc exactly the images of the booted and rollback
// deployments (each with the bound images it recorded) and the container's
// image remain; --dry-run changes nothing; the booted image still runs.
func TestGCKeepsExactlyWhatConsumersUse(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	ref := func(s string) string { return reg.Ref(s) }
	push := func(name, repoTag string) { reg.Push(t, harness.AppImage(t, name), repoTag, "gzip") }

	// bound images per OS version, as repo:tag of the test registry.
	versions := [][]string{
		{"apps/a:1", "apps/b:latest"},
		{"apps/a:1", "apps/b:latest", "apps/c:1"},
		{"apps/a:1", "apps/c:1"},
		{"apps/a:2", "apps/c:1", "apps/d:1"},
		{"apps/d:1"},
		{"apps/d:1", "apps/a:1"},
		{"apps/a:1"},
	}
	pushOS := func(v int) {
		var bound []harness.Bound
		for _, b := range versions[v] {
			bound = append(bound, harness.BoundImage(strings.NewReplacer("apps/", "", ":", "-").Replace(b), ref(b)))
		}
		reg.Push(t, osVersion(t, fmt.Sprint(v+1), bound, harness.Layer{
			{Path: "/usr/share/os/version", Type: harness.File, Data: []byte(fmt.Sprintf("v%d\n", v+1))},
		}), "os:latest", "gzip")
	}
	// ids[v] are the image IDs version v+1 uses: the OS image and its bound images.
	ids := make([]map[string]bool, len(versions))
	record := func(v int) {
		ids[v] = map[string]bool{h.idOf(ref("os:latest")): true}
		for _, b := range versions[v] {
			ids[v][h.idOf(ref(b))] = true
		}
	}

	for _, a := range []string{"apps/a:1", "apps/b:latest", "apps/c:1", "apps/d:1"} {
		push(a, a)
	}
	push("a-two", "apps/a:2")
	pushOS(0)
	h.ok(h.installArgs(ref("os:latest"), "--experimental-unified-storage")...)
	record(0)

	// A container made from v1's apps/b:latest, which v2 retags and v3 drops.
	oldB := h.idOf(ref("apps/b:latest"))
	if out, err := h.podmanC.Run(t, "create", "--name", "keep-b", oldB, "true"); err != nil {
		t.Fatalf("podman create: %v\n%s", err, out)
	}

	for v := 1; v < len(versions); v++ {
		if v == 1 {
			push("b-new", "apps/b:latest") // retag
		}
		pushOS(v)
		h.ok("upgrade", "--tls-verify=false", "--signature-policy", h.policy)
		record(v)
		h.ok("internals", "finalize-staged")
		h.ok("internals", "simulate-reboot")

		before := h.storeIDs()
		layersBefore, _ := h.storeContents()
		dry := h.ok("gc", "--dry-run")
		if after := h.storeIDs(); !maps.Equal(before, after) {
			t.Fatalf("v%d: gc --dry-run changed the store: %v -> %v\n%s", v+1, sortedKeys(before), sortedKeys(after), dry.stdout)
		}
		if layersAfter, _ := h.storeContents(); len(layersAfter) != len(layersBefore) {
			t.Fatalf("v%d: gc --dry-run removed layers", v+1)
		}

		res := h.ok("gc")
		want := map[string]bool{oldB: true}
		maps.Copy(want, ids[v])
		maps.Copy(want, ids[v-1])
		if got := h.storeIDs(); !maps.Equal(got, want) {
			t.Errorf("v%d: after gc the store holds %v, want %v\n%s", v+1, sortedKeys(got), sortedKeys(want), res.stdout)
		}
		if orphans := h.orphanLayers(); len(orphans) != 0 {
			t.Errorf("v%d: orphan layers after gc: %v", v+1, orphans)
		}
		if deps := h.deployments("default"); len(deps) != 2 {
			t.Errorf("v%d: %d deployments after gc, want booted and rollback: %v", v+1, len(deps), deps)
		}
		out, err := h.podmanC.Run(t, "run", "--rm", ref("os:latest"), "cat", "/usr/share/os/version")
		if err != nil || out != fmt.Sprintf("v%d\n", v+1) {
			t.Errorf("v%d: podman run <booted image>: %q %v", v+1, out, err)
		}
	}
}

func TestGCHonoursPins(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	reg.Push(t, osVersion(t, "1", nil, harness.Layer{etcFile("x", "1\n")}), "os:latest", "gzip")
	h.ok(h.installArgs(reg.Ref("os:latest"), "--experimental-unified-storage")...)
	reg.Push(t, harness.AppImage(t, "tool"), "apps/tool:1", "gzip")
	h.ok(h.pullArgs("--allow-non-bootable", reg.Ref("apps/tool:1"))...)
	tool := h.idOf(reg.Ref("apps/tool:1"))

	h.ok("image", "pin", reg.Ref("apps/tool:1"))
	// The pin is by ID: moving the name does not unpin the image.
	reg.Push(t, harness.AppImage(t, "tool-v2"), "apps/tool:1", "gzip")
	h.ok(h.pullArgs("--allow-non-bootable", reg.Ref("apps/tool:1"))...)
	h.ok("gc")
	if !h.storeIDs()[tool] {
		t.Fatalf("gc removed the pinned image %s after its name moved", tool)
	}
	if strings.Contains(h.ok("image", "list").stdout, "pin ") == false {
		t.Errorf("image list does not show the pin")
	}
	h.ok("image", "unpin", tool)
	h.ok("gc")
	if h.storeIDs()[tool] {
		t.Errorf("gc kept the unpinned image %s", tool)
	}
}

// SIGKILL during gc: the store stays consistent (podman images works, the
// next gc completes) and nothing a root reaches is gone.
func TestGCSurvivesSIGKILL(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	reg.Push(t, harness.AppImage(t, "lbi"), "apps/lbi:1", "gzip")
	reg.Push(t, osVersion(t, "1", []harness.Bound{harness.BoundImage("lbi", reg.Ref("apps/lbi:1"))}, harness.Layer{etcFile("x", "1\n")}), "os:latest", "gzip")
	h.ok(h.installArgs(reg.Ref("os:latest"), "--experimental-unified-storage")...)
	roots := h.storeIDs()
	for i := 0; i < 8; i++ {
		reg.Push(t, bigOSImage(t, 2<<20+i), fmt.Sprintf("junk/%d:1", i), "gzip")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := 0; trial < 6; trial++ {
		for i := 0; i < 8; i++ {
			h.ok(h.pullArgs("--bound-images", "skip", reg.Ref(fmt.Sprintf("junk/%d:1", i)))...)
		}
		cmd := h.command(t.Context(), "gc")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if out, err := h.podmanC.Run(t, "images", "-q"); err != nil {
			t.Fatalf("trial %d: podman images after a killed gc: %v\n%s", trial, err, out)
		}
		for id := range roots {
			if !h.storeIDs()[id] {
				t.Fatalf("trial %d: a killed gc removed the rooted image %s", trial, id)
			}
		}
		h.ok("gc")
		if got := h.storeIDs(); !maps.Equal(got, roots) {
			t.Fatalf("trial %d: after the next gc the store holds %v, want %v", trial, sortedKeys(got), sortedKeys(roots))
		}
		if orphans := h.orphanLayers(); len(orphans) != 0 {
			t.Fatalf("trial %d: orphan layers: %v", trial, orphans)
		}
	}
	if out, err := h.podmanC.Run(t, "run", "--rm", reg.Ref("os:latest"), "true"); err != nil {
		t.Errorf("the booted image no longer runs: %v\n%s", err, out)
	}
}
