package embed

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"go.podman.io/storage"
	"go.podman.io/storage/types"
)

type entry struct {
	name, link string
	typ        byte
	data       string
	major      int64
	pax        map[string]string
}

func layerTar(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.data)),
			Uid: 1000, Gid: 100, Devmajor: e.major, PAXRecords: e.pax}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, e.data)
	}
	tw.Close()
	return buf.Bytes()
}

func readTar(t *testing.T, data []byte) map[string]*tar.Header {
	t.Helper()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := out[h.Name]; dup {
			t.Errorf("entry %s written twice", h.Name)
		}
		out[h.Name] = h
	}
}

func TestRerootLayer(t *testing.T) {
	in := layerTar(t,
		entry{name: "./", typ: tar.TypeDir},
		entry{name: "usr/", typ: tar.TypeDir},
		entry{name: "usr/bin/app", typ: tar.TypeReg, data: "binary", pax: map[string]string{"SCHILY.xattr.security.capability": "x"}},
		entry{name: "usr/bin/app2", typ: tar.TypeLink, link: "usr/bin/app"},
		entry{name: "usr/bin/sh", typ: tar.TypeSymlink, link: "/bin/busybox"},
		entry{name: "usr/share/" + strings.Repeat("long", 30), typ: tar.TypeReg, data: "long name"},
	)
	p := layerPaths{store: "usr/lib/containers/storage", id: "abc"}
	var out bytes.Buffer
	re, err := rerootLayer(&out, bytes.NewReader(in), p, []string{"parent1", "parent0"})
	if err != nil {
		t.Fatal(err)
	}
	if re.diffID != digest.FromBytes(in) || re.diffSize != int64(len(in)) {
		t.Errorf("diffID/size %s %d, want those of the input %s %d", re.diffID, re.diffSize, digest.FromBytes(in), len(in))
	}
	if len(re.uids) != 1 || re.uids[0] != 1000 || len(re.gids) != 1 || re.gids[0] != 100 {
		t.Errorf("uids %v gids %v", re.uids, re.gids)
	}
	hs := readTar(t, out.Bytes())
	diff := "usr/lib/containers/storage/overlay/abc/diff/"
	if h := hs[diff+"usr/bin/app"]; h == nil || h.Uid != 1000 || h.PAXRecords["SCHILY.xattr.security.capability"] != "x" {
		t.Errorf("file not re-rooted with its attributes: %+v", h)
	}
	if h := hs[diff+"usr/bin/app2"]; h == nil || h.Linkname != diff+"usr/bin/app" {
		t.Errorf("hardlink not re-rooted: %+v", h)
	}
	if h := hs[diff+"usr/bin/sh"]; h == nil || h.Linkname != "/bin/busybox" {
		t.Errorf("symlink target must stay as it is: %+v", h)
	}
	if hs[diff+"usr/share/"+strings.Repeat("long", 30)] == nil {
		t.Error("long name lost")
	}
	if hs[diff] == nil || hs["usr/"] == nil || hs["usr/lib/containers/storage/overlay/l/"] == nil {
		t.Error("directories missing")
	}
	l := hs["usr/lib/containers/storage/overlay/l/"+linkID("abc")]
	if l == nil || l.Linkname != "../abc/diff" {
		t.Errorf("l/ symlink: %+v", l)
	}
	for _, f := range []string{"link", "lower", "lower-layers"} {
		if hs["usr/lib/containers/storage/overlay/abc/"+f] == nil {
			t.Errorf("no %s file", f)
		}
	}
	if hs["usr/lib/containers/storage/overlay-layers/abc.tar-split.gz"] == nil {
		t.Error("no tar-split")
	}

	// Twice the same bytes.
	var again bytes.Buffer
	if _, err := rerootLayer(&again, bytes.NewReader(in), p, []string{"parent1", "parent0"}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), again.Bytes()) {
		t.Error("re-rooting the same layer twice gave different bytes")
	}
}

func TestRerootLayerRefuses(t *testing.T) {
	p := layerPaths{store: "usr/lib/containers/storage", id: "abc"}
	for name, e := range map[string]entry{
		"whiteout":       {name: "usr/.wh.gone", typ: tar.TypeReg},
		"opaque":         {name: "usr/.wh..wh..opq", typ: tar.TypeReg},
		"0:0 device":     {name: "dev/null0", typ: tar.TypeChar},
		"dot-dot":        {name: "usr/../../etc/passwd", typ: tar.TypeReg},
		"overlay xattr":  {name: "usr/x", typ: tar.TypeReg, pax: map[string]string{"SCHILY.xattr.trusted.overlay.opaque": "y"}},
		"hardlink above": {name: "usr/x", typ: tar.TypeLink, link: "../etc/shadow"},
	} {
		_, err := rerootLayer(io.Discard, bytes.NewReader(layerTar(t, e)), p, nil)
		if !errors.Is(err, ErrNotEmbeddable) {
			t.Errorf("%s: want ErrNotEmbeddable, got %v", name, err)
		}
	}
}

// The file names are the ones containers/storage itself writes.
func TestBigDataFileName(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to open a containers/storage store")
	}
	dir := t.TempDir()
	s, err := storage.GetStore(types.StoreOptions{GraphRoot: filepath.Join(dir, "root"), RunRoot: filepath.Join(dir, "run"), GraphDriverName: "vfs"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(true)
	img, err := s.CreateImage("", nil, "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"manifest", "sha256:0123", "manifest-sha256:4567"} {
		if err := s.SetImageBigData(img.ID, key, []byte("x"), func([]byte) (digest.Digest, error) { return digest.FromString("x"), nil }); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, "root", "vfs-images", img.ID, bigDataFileName(key))); err != nil {
			t.Errorf("%s: %v", key, err)
		}
	}
}

func TestLinkIDIsStable(t *testing.T) {
	a, b := linkID("abc"), linkID("abd")
	if a != linkID("abc") || a == b || len(a) != 26 || strings.ToUpper(a) != a {
		t.Errorf("linkID: %q %q", a, b)
	}
}
