package boundimages

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// addQuadletSeeds seeds f with the example quadlets shipped in
// contrib/examples/quadlets and with the unit syntax corners the parser
// must handle (continuations, quotes, specifiers, repeated keys).
func addQuadletSeeds(f *testing.F) {
	examples, _ := filepath.Glob("../../contrib/examples/quadlets/*")
	if len(examples) == 0 {
		f.Fatal("no example quadlets in contrib/examples/quadlets")
	}
	for _, p := range examples {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, strings.HasSuffix(p, ".container"))
	}
	for _, s := range []string{
		imageUnit("quay.io/example/app:1"),
		containerUnit("docker://nginx"),
		"[Image]\nImage=quay.io/a/b:1\nImage=\n",
		"[Image]\nImage=\\\n  quay.io/a/b:1\n",
		"[Image]\nImage=\"quay.io/a/b:1\"\nAuthFile=/etc/auth.json\n",
		"[Image]\nImage=quay.io/%h/b:1\n",
		"[Image]\nImage=quay.io/a/b:1%%\n",
		"[Container]\nImage=app.image\n",
		"[Image]\nImage=oci:/srv/layout:1\n",
		"[Image]\nImage=quay.io/a/b:1@sha256:" + strings.Repeat("a", 64) + "\n",
		"[Image\nImage=x\n",
		"\x00[Image]\nImage=x\n",
	} {
		f.Add([]byte(s), strings.Contains(s, "[Container]"))
	}
}

// FuzzDiscoverQuadlet writes one bound-images.d entry whose quadlet holds the
// fuzzed bytes and runs Discover on it. Properties: Discover never panics;
// it either returns one image whose Ref is fully qualified and stable under
// normalize, or an InvalidError (ErrInvalid) naming the entry, never any
// other kind of error (the content is the image's fault, not the host's).
func FuzzDiscoverQuadlet(f *testing.F) {
	addQuadletSeeds(f)
	f.Fuzz(func(t *testing.T, content []byte, container bool) {
		ext := extImage
		if container {
			ext = extContainer
		}
		root := t.TempDir()
		q := filepath.Join(root, qdir, "app"+ext)
		if err := os.MkdirAll(filepath.Dir(q), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(q, content, 0o644); err != nil {
			t.Fatal(err)
		}
		// A .container may name app.image; give it one so that path is fuzzed too.
		if container {
			if err := os.WriteFile(filepath.Join(root, qdir, "app.image"), content, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		entry := filepath.Join(root, bid, "app"+ext)
		if err := os.MkdirAll(filepath.Dir(entry), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/"+qdir+"/app"+ext, entry); err != nil {
			t.Fatal(err)
		}

		imgs, err := Discover(root)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("quadlet %q: an error that is not ErrInvalid: %v", content, err)
			}
			if !strings.Contains(err.Error(), "/"+bid+"/app"+ext) {
				t.Fatalf("quadlet %q: the error does not name the entry: %v", content, err)
			}
			return
		}
		if len(imgs) != 1 {
			t.Fatalf("quadlet %q: want 1 image, got %+v", content, imgs)
		}
		img := imgs[0]
		again, err := normalize(img.Ref)
		if err != nil || again != img.Ref {
			t.Fatalf("quadlet %q: Ref %q does not normalize to itself: %q, %v", content, img.Ref, again, err)
		}
		if strings.ContainsAny(img.Ref, " \t\r\n") {
			t.Fatalf("quadlet %q: Ref %q contains white space", content, img.Ref)
		}
		if img.AuthFile != "" && !filepath.IsAbs(img.AuthFile) {
			t.Fatalf("quadlet %q: AuthFile %q is not absolute", content, img.AuthFile)
		}
	})
}

// FuzzSpecValue: a value specValue accepts has no specifier left in it,
// and "%%" is the only way a '%' gets through.
func FuzzSpecValue(f *testing.F) {
	for _, s := range []string{"quay.io/a/b:1", "a%%b", "%h", "\"quoted\"", "a\\\nb", "50%", "'x'"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := specValue(raw)
		if err != nil {
			return
		}
		if strings.Count(v, "%") > strings.Count(raw, "%%") {
			t.Fatalf("specValue(%q) = %q lets a specifier through", raw, v)
		}
		if strings.Contains(v, "\\\n") {
			t.Fatalf("specValue(%q) = %q keeps a continuation", raw, v)
		}
	})
}
