package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// AppendRawLayer adds tarData, an uncompressed tar stream, as the new top
// layer of the image tagged tag in the OCI layout at dir (as written by
// [Image.WriteOCILayout]), and retags the changed image as tag. The stream is
// stored verbatim: unlike a [Layer], its member names are not cleaned, so it
// can carry hostile entries ("../x", absolute names, links out of the root).
func AppendRawLayer(dir, tag string, tarData []byte) error {
	blobs := filepath.Join(dir, "blobs", "sha256")
	var idx imgspecv1.Index
	if err := readBlobJSON(filepath.Join(dir, imgspecv1.ImageIndexFile), &idx); err != nil {
		return err
	}
	var mfDesc *imgspecv1.Descriptor
	for i, m := range idx.Manifests {
		if m.Annotations[imgspecv1.AnnotationRefName] == tag {
			mfDesc = &idx.Manifests[i]
		}
	}
	if mfDesc == nil {
		return fmt.Errorf("%s: no image tagged %q", dir, tag)
	}
	var mf imgspecv1.Manifest
	if err := readBlobJSON(filepath.Join(blobs, mfDesc.Digest.Encoded()), &mf); err != nil {
		return err
	}
	var cfg imgspecv1.Image
	if err := readBlobJSON(filepath.Join(blobs, mf.Config.Digest.Encoded()), &cfg); err != nil {
		return err
	}
	d := digest.FromBytes(tarData)
	if err := os.WriteFile(filepath.Join(blobs, d.Encoded()), tarData, 0o644); err != nil {
		return err
	}
	mf.Layers = append(mf.Layers, imgspecv1.Descriptor{MediaType: imgspecv1.MediaTypeImageLayer, Digest: d, Size: int64(len(tarData))})
	cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, d)
	cfg.History = append(cfg.History, imgspecv1.History{Created: &Epoch, CreatedBy: "bootstore harness raw layer"})
	cfgDesc, err := writeJSONBlob(blobs, imgspecv1.MediaTypeImageConfig, cfg)
	if err != nil {
		return err
	}
	mf.Config = cfgDesc
	newDesc, err := writeJSONBlob(blobs, imgspecv1.MediaTypeImageManifest, mf)
	if err != nil {
		return err
	}
	newDesc.Annotations = map[string]string{imgspecv1.AnnotationRefName: tag}
	return updateIndex(dir, tag, newDesc)
}

func readBlobJSON(p string, v any) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}
