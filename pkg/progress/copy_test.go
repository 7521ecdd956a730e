package progress_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	imgspecs "github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/directory"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"

	"github.com/bootstore/bootstore/pkg/progress"
	"github.com/bootstore/bootstore/pkg/progress/progresstest"
)

// writeDirImage writes an image in containers/image's dir: layout with
// layers of the given sizes of incompressible data, and returns its layers
// as the manifest lists them.
func writeDirImage(t *testing.T, dir string, sizes ...int) []types.BlobInfo {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	putBlob := func(b []byte) digest.Digest {
		d := digest.FromBytes(b)
		if err := os.WriteFile(filepath.Join(dir, d.Encoded()), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	var layers []imgspecv1.Descriptor
	var infos []types.BlobInfo
	var diffIDs []digest.Digest
	for i, size := range sizes {
		data := make([]byte, size)
		for k := range data {
			data[k] = byte(rng.Uint32())
		}
		var tarBuf bytes.Buffer
		tw := tar.NewWriter(&tarBuf)
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("file%d", i), Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
		tw.Close()
		diffIDs = append(diffIDs, digest.FromBytes(tarBuf.Bytes()))
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write(tarBuf.Bytes())
		zw.Close()
		d := putBlob(gz.Bytes())
		layers = append(layers, imgspecv1.Descriptor{MediaType: imgspecv1.MediaTypeImageLayerGzip, Digest: d, Size: int64(gz.Len())})
		infos = append(infos, types.BlobInfo{Digest: d, Size: int64(gz.Len())})
	}
	config, err := json.Marshal(imgspecv1.Image{
		Platform: imgspecv1.Platform{OS: "linux", Architecture: "amd64"},
		RootFS:   imgspecv1.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	if err != nil {
		t.Fatal(err)
	}
	cd := putBlob(config)
	man, err := json.Marshal(imgspecv1.Manifest{
		Versioned: imgspecs.Versioned{SchemaVersion: 2},
		MediaType: imgspecv1.MediaTypeImageManifest,
		Config:    imgspecv1.Descriptor{MediaType: imgspecv1.MediaTypeImageConfig, Digest: cd, Size: int64(len(config))},
		Layers:    layers,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), man, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "version"), []byte("Directory Transport Version: 1.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return infos
}

// TestCopyImage drives the sink with copy.Image's own events: a first copy
// fetches every layer, a second one into the same destination finds every
// layer there (Skipped events). The destination is an OCI layout, which
// keeps the blobs it has, as the store does.
func TestCopyImage(t *testing.T) {
	srcDir, destDir := t.TempDir(), t.TempDir()
	layers := writeDirImage(t, srcDir, 3<<20, 1<<20, 100)
	src, err := directory.NewReference(srcDir)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := signature.NewPolicyContext(&signature.Policy{Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()}})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Destroy()

	var out syncBuffer
	j := progress.NewJSON(&out, progress.WithMinInterval(time.Millisecond))
	var total uint64
	for _, l := range layers {
		total += uint64(l.Size)
	}
	for i, ref := range []string{"first", "second"} {
		dest, err := layout.NewReference(destDir, ref)
		if err != nil {
			t.Fatal(err)
		}
		ch, finish := j.BeginImage(ref, layers)
		_, err = copy.Image(context.Background(), pc, dest, src, &copy.Options{
			Progress:         ch,
			ProgressInterval: time.Nanosecond, // every read
		})
		finish(err)
		if err != nil {
			t.Fatalf("copy %d: %v", i, err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	events := validate(t, out.Bytes())
	progresstest.CheckPulls(t, events)
	wantUints(t, lastFor(t, events, "ProgressBytes", "first"),
		map[string]uint64{"bytes": total, "bytesTotal": total, "bytesCached": 0, "steps": 3, "stepsTotal": 3, "stepsCached": 0})
	wantUints(t, lastFor(t, events, "ProgressBytes", "second"),
		map[string]uint64{"bytes": 0, "bytesTotal": 0, "bytesCached": total, "steps": 0, "stepsTotal": 0, "stepsCached": 3})
	var partial int
	for _, e := range events {
		if e["id"] == "first" && progresstest.Uint(t, e, "bytes") > 0 && progresstest.Uint(t, e, "bytes") < total {
			partial++
		}
	}
	if partial == 0 {
		t.Errorf("no event reported a pull in flight:\n%s", out.Bytes())
	}
}
