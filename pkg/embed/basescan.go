package embed

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
)

// maxQuadlet bounds the quadlet files the scan keeps; real ones are a few
// hundred bytes.
const maxQuadlet = 1 << 20

// baseTree is the part of the base image's file tree that app discovery
// needs: every directory and symlink, and the quadlet files (*.image,
// *.container), with the layers applied in order and whiteouts honoured.
// It is written under a private directory; symlinks inside it are resolved
// within it (securejoin), so a hostile base cannot make the scan write
// outside.
type baseTree struct {
	root  string
	store string // the store path, relative, whose presence in the base is refused
}

// apply adds one uncompressed base layer (a tar stream) to the tree. It
// fails if the layer has anything below the store path: the embedded store
// must be the only writer of that directory.
func (b *baseTree) apply(r io.Reader, layer string) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading base layer %s: %w", layer, err)
		}
		rel := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		if rel == "" {
			continue
		}
		if strings.HasPrefix(rel, b.store+"/") {
			return fmt.Errorf("the base image already has /%s (layer %s): choose another --store-path", rel, layer)
		}
		dir, name := path.Split(rel)
		if name == ".wh..wh..opq" {
			if p, err := b.resolve(dir); err == nil {
				entries, _ := os.ReadDir(p)
				for _, e := range entries {
					os.RemoveAll(filepath.Join(p, e.Name()))
				}
			}
			continue
		}
		if hidden, ok := strings.CutPrefix(name, ".wh."); ok {
			if p, err := b.resolve(dir); err == nil {
				os.RemoveAll(filepath.Join(p, hidden))
			}
			continue
		}
		parent, err := b.resolve(dir)
		if err != nil {
			return err
		}
		dest := filepath.Join(parent, name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if fi, err := os.Lstat(dest); err == nil && !fi.IsDir() {
				os.RemoveAll(dest)
			}
			if err := os.MkdirAll(dest, 0o755); err != nil {
				return err
			}
		case tar.TypeSymlink:
			os.RemoveAll(dest)
			if err := os.Symlink(hdr.Linkname, dest); err != nil {
				return err
			}
		case tar.TypeReg, tar.TypeLink:
			os.RemoveAll(dest)
			ext := path.Ext(name)
			if ext != ".image" && ext != ".container" {
				continue
			}
			if hdr.Typeflag == tar.TypeLink {
				target, err := b.resolve(strings.TrimPrefix(path.Clean("/"+hdr.Linkname), "/"))
				if err == nil {
					os.Link(target, dest)
				}
				continue
			}
			if hdr.Size > maxQuadlet {
				continue
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				return fmt.Errorf("reading %s in base layer %s: %w", hdr.Name, layer, err)
			}
			if err := os.WriteFile(dest, data, 0o644); err != nil {
				return err
			}
		default:
			os.RemoveAll(dest)
		}
	}
}

// resolve is the host path of rel inside the tree, symlinks resolved within
// it; missing directories are created.
func (b *baseTree) resolve(rel string) (string, error) {
	p, err := securejoin.SecureJoin(b.root, rel)
	if err != nil {
		return "", fmt.Errorf("resolving /%s in the base image: %w", rel, err)
	}
	if err := os.MkdirAll(p, 0o755); err != nil {
		return "", err
	}
	return p, nil
}
