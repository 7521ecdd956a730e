package store

import (
	"encoding/json"
	"fmt"
	"slices"

	"go.podman.io/image/v5/types"
	"go.podman.io/storage"
	drivers "go.podman.io/storage/drivers"
	"go.podman.io/storage/pkg/chunked"
	"go.podman.io/storage/pkg/chunked/toc"
)

// Partial pulls.
//
// containers/image attempts a partial pull by itself when the source is a
// registry (docker://) and a layer's descriptor carries a zstd:chunked or
// eStargz table-of-contents annotation: containers/storage's pkg/chunked
// reads the layer's TOC and tar-split with ranged requests, takes every file
// it already has from the store's other layers (hardlinked, see
// use_hard_links) and fetches only the rest. Before the layer is committed it
// rebuilds the layer's tar stream from the staged files and the tar-split
// and checks its digest against the config's DiffID, so a partially pulled
// layer is byte for byte the layer a full pull would have made.
//
// Only the overlay driver can do it; on a vfs store (the fallback) every
// layer is pulled whole, and pulls say so once per command.
//
// The options bootstore sets (containers/storage reads them as strings):
//
//   - enable_partial_images=true: use the partial path where possible.
//   - use_hard_links=true: a file that another layer already has with the
//     same content, owner, mode and xattrs becomes a hardlink to it instead
//     of a copy: the store keeps one inode for it (DESIGN.md invariant 1).
//     Hardlinked files share one mtime, the first layer's.
//   - convert_images stays false. With it, containers/storage would fetch
//     gzip and zstd layers whole and then convert them locally to
//     zstd:chunked (hashing every file and writing an uncompressed chunked
//     copy of the layer to a temporary file before applying it) only so that
//     later zstd:chunked pulls can reuse their files; it also turns every
//     case where a partial pull is impossible (a vfs store, a registry that
//     refuses ranges) from a fallback into an error. Images meant for partial
//     upgrades should be pushed as zstd:chunked (`bootstore image push
//     --compression-format zstd:chunked`); then the store indexes their
//     files at pull time at no extra cost.
//   - insecure_allow_unpredictable_image_contents stays false. eStargz layers
//     carry no tar-split, so containers/storage v1.64 cannot check a
//     partially pulled eStargz layer against its DiffID and pulls it whole
//     unless this option is set; bootstore does not trade that check for
//     bandwidth. eStargz images are pulled whole and correctly.
func partialPullOptions() map[string]string {
	return map[string]string{
		"enable_partial_images": "true",
		"use_hard_links":        "true",
	}
}

// chunkedManifestKey is the layer big-data item in which containers/storage
// keeps the TOC of a layer it applied through pkg/chunked (a partial pull or
// a convert_images conversion); its layers cache indexes only such layers
// when it looks for files to reuse.
const chunkedManifestKey = "zstd-chunked-manifest"

// How a layer came into the store, as containers/storage recorded it.
const (
	// PullPartial: applied through pkg/chunked from a layer's TOC; only
	// the files the store lacked were fetched. containers/storage records
	// the TOC digest and no compressed digest.
	PullPartial = "partial"
	// PullFull: the whole blob was fetched (or read locally) and applied.
	PullFull = "full"
	// PullConverted: the whole blob was fetched and converted to
	// zstd:chunked locally (convert_images), so its files can be reused.
	PullConverted = "converted"
)

// LayerInfo is one layer of an image in List, base layer first.
type LayerInfo struct {
	ID string `json:"id"`
	// DiffID is the digest of the layer's uncompressed tar stream.
	DiffID string `json:"diffID"`
	// CompressedDigest is the blob a full pull applied; empty after a
	// partial pull, which never sees the whole blob.
	CompressedDigest string `json:"compressedDigest,omitempty"`
	// TOCDigest is the digest of the zstd:chunked or eStargz TOC a partial
	// pull used.
	TOCDigest string `json:"tocDigest,omitempty"`
	// Size is the uncompressed size (-1 when unknown).
	Size int64 `json:"size"`
	// Pull is PullPartial, PullFull or PullConverted.
	Pull string `json:"pull"`
	// Partial is Pull == PullPartial.
	Partial bool `json:"partial"`
}

// layerInfo describes l from the fields containers/storage keeps.
func layerInfo(l *storage.Layer) LayerInfo {
	info := LayerInfo{
		ID: l.ID, DiffID: l.UncompressedDigest.String(), CompressedDigest: l.CompressedDigest.String(),
		TOCDigest: l.TOCDigest.String(), Size: l.UncompressedSize, Pull: PullFull,
	}
	chunked := slices.Contains(l.BigDataNames, chunkedManifestKey)
	switch {
	case l.TOCDigest != "" && l.CompressedDigest == "" && chunked:
		info.Pull, info.Partial = PullPartial, true
	case l.CompressedDigest != "" && chunked:
		info.Pull = PullConverted
	}
	return info
}

// layerChain returns the LayerInfo of the layers under top, base first.
func layerChain(byID map[string]*storage.Layer, top string) []LayerInfo {
	var chain []LayerInfo
	for id := top; id != ""; {
		l, ok := byID[id]
		if !ok {
			break
		}
		chain = append(chain, layerInfo(l))
		id = l.Parent
	}
	slices.Reverse(chain)
	if chain == nil {
		chain = []LayerInfo{}
	}
	return chain
}

// layersByID indexes every layer of the store.
func (s *Store) layersByID() (map[string]*storage.Layer, error) {
	layers, err := s.s.Layers()
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*storage.Layer, len(layers))
	for i := range layers {
		byID[layers[i].ID] = &layers[i]
	}
	return byID, nil
}

// PartialPulls reports whether this store can pull layers partially.
func (s *Store) PartialPulls() bool { return s.driver == DriverOverlay }

// notePartialPullsOff tells once per Store (i.e. per command) that partial
// pulls are off on a vfs store. A command that has just created the store
// already printed the fallback warning, which says so.
func (s *Store) notePartialPullsOff() {
	if s.PartialPulls() || s.created {
		return
	}
	s.partialNote.Do(func() {
		fmt.Fprintf(s.opts.Warn, "Note: partial pulls (zstd:chunked, eStargz) are off: the store %s uses the vfs driver, so every layer is pulled whole.\n",
			s.opts.GraphRoot)
	})
}

// hasBlob reports whether the store already holds the layer of blob b:
// by its compressed digest (a full pull of the same blob), by its digest as
// a DiffID (an uncompressed blob), or by its TOC digest (a partial pull of
// the same zstd:chunked or eStargz blob, which records no compressed digest).
func (s *Store) hasBlob(b types.BlobInfo) bool {
	if s.hasLayer(b.Digest) {
		return true
	}
	d, err := toc.GetTOCDigest(b.Annotations)
	if err != nil || d == nil {
		return false
	}
	ls, err := s.s.LayersByTOCDigest(*d)
	return err == nil && len(ls) > 0
}

// partialGuard is the store containers/image writes pulls into. It passes
// everything through, except that it checks every layer staged by a
// partial pull against what containers/storage v1.64.2's partial path can
// represent, and turns a layer it cannot into a full pull of that layer.
//
// That path creates no character or block device and no fifo (pkg/chunked
// ignores them), and sets neither the owner nor the xattrs of a symlink.
// Its DiffID check cannot notice: it rebuilds the tar stream from the
// tar-split, whose headers still describe those entries. Such a layer would
// be committed silently incomplete; instead its staging is dropped and
// containers/image fetches the blob whole (ErrFallbackToOrdinaryLayerDownload).
type partialGuard struct{ storage.Store }

func (g partialGuard) PrepareStagedLayer(options *drivers.ApplyDiffWithDifferOpts, differ drivers.Differ) (*drivers.DriverWithDifferOutput, error) {
	out, err := g.Store.PrepareStagedLayer(options, differ)
	if err != nil || out == nil {
		return out, err
	}
	if reason := unrepresentable(out.BigData[chunkedManifestKey]); reason != "" {
		_ = g.Store.CleanupStagedLayer(out)
		return nil, chunked.ErrFallbackToOrdinaryLayerDownload{
			Err: fmt.Errorf("a partial pull cannot represent this layer (%s): pulling it whole", reason)}
	}
	return out, nil
}

// unrepresentable names the first TOC entry a partial pull drops or
// changes, or returns "". A TOC that cannot be read is left to
// containers/storage, which has already parsed it.
func unrepresentable(tocJSON []byte) string {
	if len(tocJSON) == 0 {
		return ""
	}
	var toc struct {
		Entries []struct {
			Type   string            `json:"type"`
			Name   string            `json:"name"`
			UID    int               `json:"uid"`
			GID    int               `json:"gid"`
			Xattrs map[string]string `json:"xattrs"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(tocJSON, &toc); err != nil {
		return ""
	}
	for _, e := range toc.Entries {
		switch {
		case e.Type == "char" || e.Type == "block" || e.Type == "fifo":
			return fmt.Sprintf("%s is a %s", e.Name, e.Type)
		case e.Type == "symlink" && (len(e.Xattrs) > 0 || e.UID != 0 || e.GID != 0):
			return fmt.Sprintf("the symlink %s has an owner or xattrs", e.Name)
		}
	}
	return ""
}
