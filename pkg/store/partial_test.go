package store

import (
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"go.podman.io/storage"
)

func TestUnrepresentable(t *testing.T) {
	for _, tc := range []struct {
		toc, want string
	}{
		{``, ""},
		{`not json`, ""},
		{`{"version":1,"entries":[{"type":"dir","name":"usr"},{"type":"reg","name":"usr/a","digest":"sha256:x"},{"type":"symlink","name":"usr/l","linkName":"a"},{"type":"hardlink","name":"usr/h","linkName":"usr/a"}]}`, ""},
		{`{"entries":[{"type":"fifo","name":"run/f"}]}`, "run/f is a fifo"},
		{`{"entries":[{"type":"char","name":"dev/null","devMajor":1,"devMinor":3}]}`, "dev/null is a char"},
		{`{"entries":[{"type":"block","name":"dev/loop0","devMajor":7}]}`, "dev/loop0 is a block"},
		{`{"entries":[{"type":"symlink","name":"l","linkName":"a","xattrs":{"trusted.x":"eA=="}}]}`, "symlink l"},
		{`{"entries":[{"type":"symlink","name":"l","linkName":"a","uid":1000}]}`, "symlink l"},
	} {
		got := unrepresentable([]byte(tc.toc))
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("unrepresentable(%s) = %q, want %q", tc.toc, got, tc.want)
		}
	}
}

func TestLayerInfo(t *testing.T) {
	d := digest.FromString
	manifest := []string{chunkedManifestKey, "zstd-chunked-layer-data"}
	for _, tc := range []struct {
		name  string
		layer storage.Layer
		pull  string
	}{
		{"full", storage.Layer{ID: "a", CompressedDigest: d("blob"), UncompressedDigest: d("tar")}, PullFull},
		{"partial", storage.Layer{ID: "b", TOCDigest: d("toc"), UncompressedDigest: d("tar"), BigDataNames: manifest}, PullPartial},
		{"converted", storage.Layer{ID: "c", CompressedDigest: d("blob"), UncompressedDigest: d("tar"), BigDataNames: manifest}, PullConverted},
		// A TOC digest without the staged TOC is not a partial pull.
		{"toc-only", storage.Layer{ID: "e", TOCDigest: d("toc")}, PullFull},
	} {
		info := layerInfo(&tc.layer)
		if info.Pull != tc.pull || info.Partial != (tc.pull == PullPartial) {
			t.Errorf("%s: %+v, want pull %s", tc.name, info, tc.pull)
		}
	}
	byID := map[string]*storage.Layer{
		"base": {ID: "base"}, "mid": {ID: "mid", Parent: "base"}, "top": {ID: "top", Parent: "mid"},
	}
	var ids []string
	for _, l := range layerChain(byID, "top") {
		ids = append(ids, l.ID)
	}
	if strings.Join(ids, " ") != "base mid top" {
		t.Errorf("layerChain: %v, want base first", ids)
	}
	if got := layerChain(byID, ""); got == nil || len(got) != 0 {
		t.Errorf("layerChain of no layer: %#v, want an empty list", got)
	}
}
