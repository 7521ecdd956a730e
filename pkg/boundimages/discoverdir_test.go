package boundimages

import (
	"errors"
	"testing"
)

// DiscoverDir reads another directory with the same rules and names it in
// its errors; Discover's Dir is not read.
func TestDiscoverDir(t *testing.T) {
	const pbi = "usr/lib/bootc/physically-bound-images.d"
	root := tree{
		files: map[string]string{
			"usr/share/containers/systemd/web.container": containerUnit("quay.io/example/web:1"),
			"usr/share/containers/systemd/lbi.image":     imageUnit("quay.io/example/lbi:1"),
		},
		links: map[string]string{
			pbi + "/web.container": "/usr/share/containers/systemd/web.container",
			Dir + "/lbi.image":     "/usr/share/containers/systemd/lbi.image",
			pbi + "/bad.image":     "/usr/share/containers/systemd/missing.image",
		},
	}.build(t)
	_, err := DiscoverDir(root, pbi)
	var inv *InvalidError
	if !errors.As(err, &inv) || inv.Entry != "/"+pbi+"/bad.image" {
		t.Fatalf("want an invalid entry in %s, got %v", pbi, err)
	}

	root = tree{
		files: map[string]string{"usr/share/containers/systemd/web.container": containerUnit("quay.io/example/web:1")},
		links: map[string]string{pbi + "/web.container": "/usr/share/containers/systemd/web.container"},
	}.build(t)
	imgs, err := DiscoverDir(root, "/"+pbi+"/")
	if err != nil || len(imgs) != 1 || imgs[0].Ref != "quay.io/example/web:1" || imgs[0].Entry != "/"+pbi+"/web.container" {
		t.Fatalf("DiscoverDir: %+v, %v", imgs, err)
	}
	if imgs, err := Discover(root); err != nil || imgs != nil {
		t.Errorf("Discover read %s: %+v, %v", pbi, imgs, err)
	}
}
