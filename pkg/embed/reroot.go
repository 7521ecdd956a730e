package embed

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	"github.com/vbatts/tar-split/tar/asm"
	tsstorage "github.com/vbatts/tar-split/tar/storage"
)

// ErrNotEmbeddable is wrapped by every error about an app layer that cannot
// be placed in the OS image as it is: whiteouts, paths that leave the layer,
// entries the host's overlayfs would reinterpret.
var ErrNotEmbeddable = errors.New("app layer cannot be embedded")

// epoch is the modification time of every entry bootstore itself adds to an
// OS layer (directories, link files, metadata): a fixed value, so two builds
// give the same bytes.
var epoch = unixEpoch()

// linkID is the overlay driver's short name of a layer (the "link" file and
// the l/ symlink), derived from the layer ID instead of drawn at random, so
// the layer's OS blob depends on the app layer only. 26 characters of
// upper-case base32, like the driver's own.
func linkID(layerID string) string {
	sum := sha256.Sum256([]byte("bootstore-link:" + layerID))
	return base32.StdEncoding.EncodeToString(sum[:])[:26]
}

// layerID is containers/image's ID for a layer with this DiffID on top of
// parent (a chain ID: the DiffID's hex for a base layer, else
// sha256(parent+"+"+diffID hex)); a host that pulls the same app gets the same
// IDs.
func layerID(parent string, diffID digest.Digest) string {
	if parent == "" {
		return diffID.Encoded()
	}
	return digest.Canonical.FromString(parent + "+" + diffID.Encoded()).Encoded()
}

// rerooted is what re-rooting one app layer found out about it, for the
// store's layer record.
type rerooted struct {
	diffID   digest.Digest // of the app layer's uncompressed tar stream
	diffSize int64
	uids     []uint32
	gids     []uint32
}

// layerPaths are the store paths of one layer, relative to the OS image's
// root (no leading slash).
type layerPaths struct {
	store string // e.g. usr/lib/containers/storage
	id    string
}

func (p layerPaths) dir() string      { return path.Join(p.store, "overlay", p.id) }
func (p layerPaths) diff() string     { return path.Join(p.dir(), "diff") }
func (p layerPaths) linkName() string { return path.Join(p.store, "overlay", "l", linkID(p.id)) }

// writeDirs writes directory entries for dir and every ancestor of it that
// is not yet in done, with fixed attributes.
func writeDirs(tw *tar.Writer, dir string, done map[string]bool) error {
	var missing []string
	for d := dir; d != "." && d != "/" && d != "" && !done[d]; d = path.Dir(d) {
		missing = append(missing, d)
	}
	slices.Reverse(missing)
	for _, d := range missing {
		mode := int64(0o755)
		// The driver's own directories are private, as containers/storage
		// makes them: an app's setuid files must not be reachable by users
		// of the host through the store.
		switch path.Base(d) {
		case "overlay", "overlay-layers", "overlay-images":
			mode = 0o700
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		done[d] = true
	}
	return nil
}

// writeFile writes a regular file entry with fixed attributes.
func writeFile(tw *tar.Writer, name string, mode int64, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)),
		ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// rerootLayer reads the app layer's uncompressed tar stream from r and writes
// to w an OS-image layer holding the overlay driver's on-disk form of it
// under p: every entry of the layer under diff/ with its content and
// attributes unchanged, the link, lower and lower-layers files, the l/
// symlink, and the tar-split file from which containers/storage rebuilds the
// layer's exact tar stream (podman push, save). lowers are the layer IDs
// below this one, nearest first. Nothing in the output depends on anything
// but the app layer, its parents' IDs and p.
//
// Entries that the host would reinterpret are refused with ErrNotEmbeddable:
// whiteouts (.wh.*: the OS image's own layer would hide the file, and
// on the store's disk they must be 0:0 character devices, which in turn are
// whiteouts of the OS image), 0:0 character devices, overlay xattrs, and
// names with ".." components.
func rerootLayer(w io.Writer, r io.Reader, p layerPaths, lowers []string) (*rerooted, error) {
	uncompressed := digest.Canonical.Digester()
	counter := &countingWriter{}
	var tsBuf bytes.Buffer
	tsGzip := gzip.NewWriter(&tsBuf)
	packer := tsstorage.NewJSONPacker(tsGzip)
	stream, done, err := asm.NewInputTarStreamWithDone(io.TeeReader(r, io.MultiWriter(uncompressed.Hash(), counter)), packer, tsstorage.NewDiscardFilePutter())
	if err != nil {
		return nil, err
	}
	defer stream.Close()

	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	if err := writeDirs(tw, path.Join(p.store, "overlay", "l"), dirs); err != nil {
		return nil, err
	}
	if err := writeDirs(tw, p.dir(), dirs); err != nil {
		return nil, err
	}
	uids, gids := map[uint32]bool{}, map[uint32]bool{}
	tr := tar.NewReader(stream)
	wroteDiff := false
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading the layer's tar stream: %w", err)
		}
		rel, err := layerPath(hdr.Name)
		if err != nil {
			return nil, err
		}
		if err := embeddable(hdr, rel); err != nil {
			return nil, err
		}
		uids[uint32(hdr.Uid)] = true
		gids[uint32(hdr.Gid)] = true
		out := *hdr
		out.PAXRecords = maps(hdr.PAXRecords)
		delete(out.PAXRecords, "path")
		delete(out.PAXRecords, "linkpath")
		// The longer names may not fit the source's format; PAX holds
		// everything any format can.
		out.Format = tar.FormatPAX
		if rel == "" {
			// The layer's "./" entry carries the attributes of the
			// diff directory itself.
			if hdr.Typeflag != tar.TypeDir || wroteDiff {
				return nil, fmt.Errorf("%w: the layer's root entry %q is not a directory", ErrNotEmbeddable, hdr.Name)
			}
			out.Name = p.diff() + "/"
			wroteDiff = true
		} else {
			if !wroteDiff {
				if err := writeDirs(tw, p.diff(), dirs); err != nil {
					return nil, err
				}
				wroteDiff = true
			}
			out.Name = path.Join(p.diff(), rel)
			if hdr.Typeflag == tar.TypeDir {
				out.Name += "/"
			}
		}
		if hdr.Typeflag == tar.TypeLink {
			target, err := layerPath(hdr.Linkname)
			if err != nil || target == "" {
				return nil, fmt.Errorf("%w: hardlink %s points at %q", ErrNotEmbeddable, hdr.Name, hdr.Linkname)
			}
			out.Linkname = path.Join(p.diff(), target)
		}
		if err := tw.WriteHeader(&out); err != nil {
			return nil, fmt.Errorf("writing %s: %w", out.Name, err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return nil, fmt.Errorf("copying %s: %w", hdr.Name, err)
		}
	}
	if !wroteDiff {
		if err := writeDirs(tw, p.diff(), dirs); err != nil {
			return nil, err
		}
	}
	// Drain the padding after the end-of-archive marker: the DiffID covers it.
	if _, err := io.Copy(io.Discard, stream); err != nil {
		return nil, fmt.Errorf("reading the layer's tar stream: %w", err)
	}
	if err := <-done; err != nil {
		return nil, fmt.Errorf("indexing the layer's tar stream: %w", err)
	}
	if err := tsGzip.Close(); err != nil {
		return nil, err
	}

	lid := linkID(p.id)
	if err := writeFile(tw, path.Join(p.dir(), "link"), 0o644, []byte(lid)); err != nil {
		return nil, err
	}
	if len(lowers) > 0 {
		links := make([]string, len(lowers))
		for i, l := range lowers {
			links[i] = "l/" + linkID(l)
		}
		if err := writeFile(tw, path.Join(p.dir(), "lower"), 0o644, []byte(strings.Join(links, ":"))); err != nil {
			return nil, err
		}
		if err := writeFile(tw, path.Join(p.dir(), "lower-layers"), 0o644, []byte(strings.Join(lowers, ":"))); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: p.linkName(), Linkname: path.Join("..", p.id, "diff"),
		Mode: 0o777, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	if err := writeDirs(tw, path.Join(p.store, "overlay-layers"), dirs); err != nil {
		return nil, err
	}
	if err := writeFile(tw, path.Join(p.store, "overlay-layers", p.id+".tar-split.gz"), 0o600, tsBuf.Bytes()); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return &rerooted{diffID: uncompressed.Digest(), diffSize: counter.n, uids: sortedKeys(uids), gids: sortedKeys(gids)}, nil
}

// layerPath cleans a tar entry name to a path relative to the layer's root
// ("" for the root itself), refusing ".." components.
func layerPath(name string) (string, error) {
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("%w: %q leaves the layer", ErrNotEmbeddable, name)
		}
	}
	return strings.TrimPrefix(path.Clean("/"+name), "/"), nil
}

func embeddable(hdr *tar.Header, rel string) error {
	if strings.HasPrefix(path.Base(rel), ".wh.") {
		return fmt.Errorf("%w: whiteout %s (an embedded layer cannot remove files of the layers below it; squash the app image or rebuild it without deletions)", ErrNotEmbeddable, hdr.Name)
	}
	if hdr.Typeflag == tar.TypeChar && hdr.Devmajor == 0 && hdr.Devminor == 0 {
		return fmt.Errorf("%w: %s is a 0:0 character device, which overlayfs reads as a whiteout", ErrNotEmbeddable, hdr.Name)
	}
	for k := range hdr.PAXRecords {
		if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok && (strings.HasPrefix(x, "trusted.overlay.") || strings.HasPrefix(x, "user.overlay.")) {
			return fmt.Errorf("%w: %s carries the overlayfs xattr %s", ErrNotEmbeddable, hdr.Name, x)
		}
	}
	return nil
}

func maps(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func sortedKeys(m map[uint32]bool) []uint32 {
	out := make([]uint32, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}
