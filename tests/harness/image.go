package harness

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// EntryType is the kind of a layer [Entry].
type EntryType int

// Entry kinds. Whiteout and Opaque are the OCI whiteout markers, not real files.
const (
	File     EntryType = iota // regular file with Data (or Content/Size)
	Dir                       // directory
	Symlink                   // symbolic link to Link (verbatim)
	Hardlink                  // hard link to the earlier entry at path Link (in the same layer)
	Fifo                      // named pipe
	CharDev                   // character device DevMajor:DevMinor
	BlockDev                  // block device DevMajor:DevMinor
	Whiteout                  // deletes Path from lower layers: writes dir/.wh.<name>
	Opaque                    // hides lower contents of directory Path: writes Path/.wh..wh..opq
)

// Epoch is the modification time used for entries, configs and history whose time is zero,
// so that the same Image always produces the same digests.
var Epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Entry is one tar member of a layer. Path is absolute or relative to the root ("/usr/bin"
// and "usr/bin" are the same). Zero Mode means 0644 for files, 0755 for dirs, 0777 for
// symlinks, 0600 for devices and fifos.
type Entry struct {
	Path               string
	Type               EntryType
	Mode               int64
	UID, GID           int
	Data               []byte
	Link               string            // Symlink target (verbatim) or Hardlink target path
	Xattrs             map[string]string // written as PAX SCHILY.xattr.<key>
	ModTime            time.Time         // zero means Epoch
	DevMajor, DevMinor int64

	// Content, when non-nil, streams the file body instead of Data; it must yield exactly
	// Size bytes each time it is called. It lets big images be generated without holding
	// their bytes in memory.
	Content func() io.Reader
	Size    int64
}

// Layer is an ordered list of entries, written to tar in order. Missing parent directories
// are NOT added automatically; wrap the layer in [WithParents] to get them.
type Layer []Entry

// Image is an image built in memory. Labels, Env, Entrypoint and Cmd go into the config.
type Image struct {
	Layers     []Layer
	Labels     map[string]string
	Env        []string
	Entrypoint []string
	Cmd        []string
}

// WithParents returns the layer with a Dir entry (0755, root) inserted before the first
// entry that needs each missing parent directory; entries already present are kept as is.
func WithParents(l Layer) Layer {
	have := map[string]bool{}
	for _, e := range l {
		if e.Type == Dir {
			have[cleanPath(e.Path)] = true
		}
	}
	out := make(Layer, 0, len(l)+8)
	for _, e := range l {
		var missing []string
		for d := path.Dir(cleanPath(e.Path)); d != "." && d != "/" && d != ""; d = path.Dir(d) {
			if !have[d] {
				missing = append(missing, d)
				have[d] = true
			}
		}
		for i := len(missing) - 1; i >= 0; i-- {
			out = append(out, Entry{Path: missing[i], Type: Dir})
		}
		out = append(out, e)
	}
	return out
}

// cleanPath returns p relative to the root, without leading "/" or "./".
func cleanPath(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}

// WriteTar writes the layer as an uncompressed tar stream to w.
func (l Layer) WriteTar(w io.Writer) error {
	tw := tar.NewWriter(w)
	buf := make([]byte, 64<<10)
	for _, e := range l {
		if err := writeEntry(tw, e, buf); err != nil {
			return fmt.Errorf("layer entry %q: %w", e.Path, err)
		}
	}
	return tw.Close()
}

func writeEntry(tw *tar.Writer, e Entry, buf []byte) error {
	p := cleanPath(e.Path)
	if p == "" {
		return errors.New("empty path")
	}
	mt := e.ModTime
	if mt.IsZero() {
		mt = Epoch
	}
	h := &tar.Header{Name: p, Mode: e.Mode, Uid: e.UID, Gid: e.GID, ModTime: mt, Format: tar.FormatPAX}
	var body io.Reader
	switch e.Type {
	case File:
		h.Typeflag = tar.TypeReg
		h.Size = int64(len(e.Data))
		body = bytes.NewReader(e.Data)
		if e.Content != nil {
			h.Size, body = e.Size, e.Content()
		}
		defMode(h, 0o644)
	case Dir:
		h.Typeflag, h.Name = tar.TypeDir, p+"/"
		defMode(h, 0o755)
	case Symlink:
		h.Typeflag, h.Linkname = tar.TypeSymlink, e.Link
		defMode(h, 0o777)
	case Hardlink:
		h.Typeflag, h.Linkname = tar.TypeLink, cleanPath(e.Link)
		defMode(h, 0o644)
	case Fifo, CharDev, BlockDev:
		h.Typeflag = map[EntryType]byte{Fifo: tar.TypeFifo, CharDev: tar.TypeChar, BlockDev: tar.TypeBlock}[e.Type]
		h.Devmajor, h.Devminor = e.DevMajor, e.DevMinor
		defMode(h, 0o600)
	case Whiteout:
		h.Typeflag, h.Name = tar.TypeReg, path.Join(path.Dir(p), ".wh."+path.Base(p))
		defMode(h, 0o644)
	case Opaque:
		h.Typeflag, h.Name = tar.TypeReg, path.Join(p, ".wh..wh..opq")
		defMode(h, 0o644)
	default:
		return fmt.Errorf("unknown entry type %d", e.Type)
	}
	if len(e.Xattrs) > 0 {
		h.PAXRecords = map[string]string{}
		for k, v := range e.Xattrs {
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	if body != nil && h.Size > 0 {
		n, err := io.CopyBuffer(tw, body, buf)
		if err != nil {
			return err
		}
		if n != h.Size {
			return fmt.Errorf("content gave %d bytes, want %d", n, h.Size)
		}
	}
	return nil
}

func defMode(h *tar.Header, m int64) {
	if h.Mode == 0 {
		h.Mode = m
	}
}

// WriteOCILayout writes the image with uncompressed layers into the OCI image layout at dir
// (created if needed), tagged tag; other tags already in dir are kept.
func (img Image) WriteOCILayout(dir, tag string) error {
	_, err := img.writeLayout(dir, tag, false)
	return err
}

// WriteOCILayoutGzip is WriteOCILayout with gzip-compressed layers.
func (img Image) WriteOCILayoutGzip(dir, tag string) error {
	_, err := img.writeLayout(dir, tag, true)
	return err
}

// writeLayout writes the layout and returns the manifest digest.
func (img Image) writeLayout(dir, tag string, gz bool) (digest.Digest, error) {
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, imgspecv1.ImageLayoutFile),
		[]byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return "", err
	}
	cfg := imgspecv1.Image{
		Created:  &Epoch,
		Platform: imgspecv1.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		Config: imgspecv1.ImageConfig{
			Env: img.Env, Entrypoint: img.Entrypoint, Cmd: img.Cmd, Labels: img.Labels,
		},
		RootFS: imgspecv1.RootFS{Type: "layers"},
	}
	if cfg.Config.Env == nil {
		cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	mf := imgspecv1.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: imgspecv1.MediaTypeImageManifest}
	for i, l := range img.Layers {
		diffID, desc, err := writeLayerBlob(blobs, l, gz)
		if err != nil {
			return "", fmt.Errorf("layer %d: %w", i, err)
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, diffID)
		cfg.History = append(cfg.History, imgspecv1.History{Created: &Epoch,
			CreatedBy: fmt.Sprintf("bootstore harness layer %d", i)})
		mf.Layers = append(mf.Layers, desc)
	}
	cfgDesc, err := writeJSONBlob(blobs, imgspecv1.MediaTypeImageConfig, cfg)
	if err != nil {
		return "", err
	}
	mf.Config = cfgDesc
	mfDesc, err := writeJSONBlob(blobs, imgspecv1.MediaTypeImageManifest, mf)
	if err != nil {
		return "", err
	}
	mfDesc.Annotations = map[string]string{imgspecv1.AnnotationRefName: tag}
	return mfDesc.Digest, updateIndex(dir, tag, mfDesc)
}

// writeLayerBlob streams the layer's tar through the hashers into a blob file.
func writeLayerBlob(blobs string, l Layer, gz bool) (digest.Digest, imgspecv1.Descriptor, error) {
	tmp, err := os.CreateTemp(blobs, ".layer-*")
	if err != nil {
		return "", imgspecv1.Descriptor{}, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	blobDig := digest.Canonical.Digester()
	cw := &countWriter{w: io.MultiWriter(tmp, blobDig.Hash())}
	diffDig := digest.Canonical.Digester()
	mediaType := imgspecv1.MediaTypeImageLayer
	var zw *gzip.Writer
	var tarOut io.Writer = cw
	if gz {
		zw = gzip.NewWriter(cw)
		tarOut, mediaType = zw, imgspecv1.MediaTypeImageLayerGzip
	}
	if err := l.WriteTar(io.MultiWriter(tarOut, diffDig.Hash())); err != nil {
		return "", imgspecv1.Descriptor{}, err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return "", imgspecv1.Descriptor{}, err
		}
	}
	if err := tmp.Close(); err != nil {
		return "", imgspecv1.Descriptor{}, err
	}
	d := blobDig.Digest()
	if err := os.Rename(tmp.Name(), filepath.Join(blobs, d.Encoded())); err != nil {
		return "", imgspecv1.Descriptor{}, err
	}
	return diffDig.Digest(), imgspecv1.Descriptor{MediaType: mediaType, Digest: d, Size: cw.n}, nil
}

func writeJSONBlob(blobs, mediaType string, v any) (imgspecv1.Descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return imgspecv1.Descriptor{}, err
	}
	d := digest.FromBytes(b)
	if err := os.WriteFile(filepath.Join(blobs, d.Encoded()), b, 0o644); err != nil {
		return imgspecv1.Descriptor{}, err
	}
	return imgspecv1.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}, nil
}

// updateIndex replaces (or adds) the manifest tagged tag in dir/index.json.
func updateIndex(dir, tag string, desc imgspecv1.Descriptor) error {
	p := filepath.Join(dir, imgspecv1.ImageIndexFile)
	idx := imgspecv1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: imgspecv1.MediaTypeImageIndex}
	if b, err := os.ReadFile(p); err == nil {
		if err := json.Unmarshal(b, &idx); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	kept := idx.Manifests[:0]
	for _, m := range idx.Manifests {
		if m.Annotations[imgspecv1.AnnotationRefName] != tag {
			kept = append(kept, m)
		}
	}
	idx.Manifests = append(kept, desc)
	sort.SliceStable(idx.Manifests, func(i, j int) bool {
		return idx.Manifests[i].Annotations[imgspecv1.AnnotationRefName] < idx.Manifests[j].Annotations[imgspecv1.AnnotationRefName]
	})
	b, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	return os.WriteFile(p, b, 0o644)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
