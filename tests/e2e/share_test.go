package e2e

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/bootstore/bootstore/pkg/fsclone"
	"github.com/bootstore/bootstore/tests/harness"
)

// layerDirs returns the diff directories of an image in the host's store,
// top layer first, read from the store's own metadata.
func (h *host) layerDirs(imageName string) []string {
	h.t.Helper()
	layers, images := h.storeContents()
	parent := map[string]string{}
	for _, l := range layers {
		parent[l.ID] = l.Parent
	}
	for _, img := range images {
		for _, n := range img.Names {
			if n != imageName {
				continue
			}
			var dirs []string
			for id := img.TopLayer; id != ""; id = parent[id] {
				dirs = append(dirs, filepath.Join(h.storageRoot(), "overlay", id, "diff"))
			}
			return dirs
		}
	}
	h.t.Fatalf("image %s not in the store", imageName)
	return nil
}

// storeFile finds the layer file a deployment path comes from.
func storeFile(layers []string, rel string) string {
	for _, l := range layers {
		p := filepath.Join(l, rel)
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// mutable reports whether rel is host-mutable content that must never share
// with the store.
func mutable(rel string) bool {
	for _, p := range []string{"etc", "usr/etc", "var"} {
		if rel == p || strings.HasPrefix(rel, p+"/") {
			return true
		}
	}
	return false
}

// checkSharing walks the deployment: files outside /etc and /var must share
// with the store (by shares), files inside must not.
func checkSharing(t *testing.T, h *host, image string, shares func(dep, store string) bool) (shared, copied int) {
	t.Helper()
	deps := h.deployments("default")
	if len(deps) != 1 {
		t.Fatalf("deployments: %v", deps)
	}
	dep := filepath.Join(h.root, "ostree/deploy/default/deploy", deps[0])
	layers := h.layerDirs(image)
	filepath.WalkDir(dep, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(dep, p)
		src := storeFile(layers, rel)
		if fi, _ := d.Info(); src == "" || fi.Size() == 0 {
			return nil
		}
		if mutable(rel) {
			if shares(p, src) {
				t.Errorf("/%s shares data with the store", rel)
			}
			copied++
		} else {
			if !shares(p, src) {
				t.Errorf("/%s does not share data with the store file %s", rel, src)
			}
			shared++
		}
		return nil
	})
	return shared, copied
}

func TestUnifiedDeploymentReflinksOnXFS(t *testing.T) {
	mnt := harness.LoopFS(t, 512<<20, harness.MkfsXFSReflink...)
	h := newHostAt(t, filepath.Join(mnt, "root"))
	reg := harness.StartRegistry(t)
	osRef, _ := pushInstallFixture(t, reg)
	out := h.ok(h.installArgs(osRef, "--experimental-unified-storage")...)
	if !strings.Contains(out.stdout, "reflink") {
		t.Errorf("install should report reflinked files:\n%s", out.stdout)
	}
	shared, copied := checkSharing(t, h, osRef, func(dep, store string) bool {
		ok, err := fsclone.SharesExtents(dep, store)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	})
	t.Logf("XFS: %d files share extents with the store, %d mutable files are copies", shared, copied)
	if shared == 0 || copied == 0 {
		t.Errorf("expected both shared and copied files, got %d and %d", shared, copied)
	}
}

func TestUnifiedDeploymentHardlinksOnExt4(t *testing.T) {
	mnt := harness.LoopFS(t, 512<<20, harness.MkfsExt4...)
	h := newHostAt(t, filepath.Join(mnt, "root"))
	reg := harness.StartRegistry(t)
	osRef, _ := pushInstallFixture(t, reg)
	out := h.ok(h.installArgs(osRef, "--experimental-unified-storage")...)
	t.Logf("install: %s", out.stdout)
	shared, copied := checkSharing(t, h, osRef, func(dep, store string) bool {
		a, errA := os.Stat(dep)
		b, errB := os.Stat(store)
		return errA == nil && errB == nil && a.Sys().(*syscall.Stat_t).Ino == b.Sys().(*syscall.Stat_t).Ino
	})
	t.Logf("ext4: %d files are hardlinks of the store's, %d mutable files are copies", shared, copied)
	if shared == 0 || copied == 0 {
		t.Errorf("expected both shared and copied files, got %d and %d", shared, copied)
	}
}
