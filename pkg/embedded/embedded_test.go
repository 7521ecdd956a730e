package embedded

import (
	"os"
	"path/filepath"
	"testing"
)

func TestImagesAndFind(t *testing.T) {
	tree := t.TempDir()
	store := filepath.Join(tree, "usr/lib/containers/storage")
	for _, d := range []string{"overlay-images", "overlay-layers"} {
		os.MkdirAll(filepath.Join(store, d), 0o700)
	}
	os.WriteFile(filepath.Join(store, "overlay-layers/layers.json"), []byte(`[{"id":"l1","diff-size":10},{"id":"l2","parent":"l1","diff-size":5}]`), 0o600)
	os.WriteFile(filepath.Join(store, "overlay-images/images.json"), []byte(`[{"id":"i2","digest":"sha256:bb","names":["r/b:1"],"layer":"l1"},{"id":"i1","digest":"sha256:aa","names":["r/a:1"],"layer":"l2"}]`), 0o600)
	imgs, err := Images(tree, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 2 || imgs[0].ID != "i1" || imgs[0].Size != 15 || len(imgs[0].Layers) != 2 || imgs[0].Layers[0] != "l1" || imgs[1].Size != 10 {
		t.Fatalf("Images: %+v", imgs)
	}
	if img, ok := Find(imgs, "r/a:1"); !ok || img.ID != "i1" {
		t.Errorf("Find by name: %+v %v", img, ok)
	}
	if img, ok := Find(imgs, "r/x@sha256:bb"); !ok || img.ID != "i2" {
		t.Errorf("Find by digest: %+v %v", img, ok)
	}
	if _, ok := Find(imgs, "r/a:2"); ok {
		t.Error("Find matched another tag")
	}
	if _, ok := Find(imgs, "r/a@sha256:cc"); ok {
		t.Error("Find matched another digest")
	}
	// EnsureStore leaves an existing store alone.
	if err := EnsureStore(tree); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(store, "overlay-images/images.lock")); !os.IsNotExist(err) {
		t.Error("EnsureStore changed an embedded store")
	}
}

func TestEnsureStore(t *testing.T) {
	tree := t.TempDir()
	if err := EnsureStore(tree); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"overlay", "overlay-images/images.lock", "overlay-layers/layers.lock"} {
		if _, err := os.Stat(filepath.Join(tree, "usr/lib/containers/storage", f)); err != nil {
			t.Error(err)
		}
	}
	if imgs, err := Images(tree, ""); err != nil || len(imgs) != 0 {
		t.Errorf("an empty store lists %v, %v", imgs, err)
	}
	bad := t.TempDir()
	os.MkdirAll(filepath.Join(bad, "usr/lib"), 0o755)
	os.Symlink("/etc", filepath.Join(bad, "usr/lib/containers"))
	if err := EnsureStore(bad); err == nil {
		t.Error("EnsureStore followed a symlinked /usr/lib/containers")
	}
	if _, err := Images(t.TempDir(), ""); err != nil {
		t.Errorf("a tree without a store: %v", err)
	}
}
