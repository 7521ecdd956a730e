// Package composefs turns an image's layers into a composefs tree: the
// whiteout-free union of the layers as an EROFS metadata image (pkg/erofs)
// whose regular files hold no data but overlayfs "redirect" and "metacopy"
// xattrs that point into the layer directory providing the file.
//
// # Lifecycle
//
//  1. [Build] walks the layers with pkg/deploy's overlay rules
//     ([deploy.Walk]) and makes a [Tree]: directories, symlinks, devices
//     and fifos as the layers have them; regular files with their size,
//     owner, mode and xattrs, plus trusted.overlay.redirect =
//     "/<layer dir below DataRoot>/<path>" and trusted.overlay.metacopy
//     (with the file's fs-verity digest when [Options.Verity] gives one);
//     hardlinks as one inode.
//
//  2. The caller adjusts the tree ([Tree.Lookup], [Tree.Put], [Clone]).
//
//  3. [Tree.Write] encodes the image; the same tree gives the same bytes.
//
//  4. The image is mounted (see [MountOptions]): erofs read-only, then
//     overlayfs with the erofs mount as the only normal lower layer and
//     DataRoot as a data-only lower layer:
//
//     mount -t erofs -o ro,loop IMAGE M
//     mount -t overlay -o ro,metacopy=on,redirect_dir=on,lowerdir=M::DATAROOT overlay TARGET
//
//     With digests in the image, add verity=require: overlayfs then
//     refuses to open a data file whose fs-verity digest differs (or that
//     has none).
//
// Data-only lower layers need Linux 6.5; verity=require 6.6.
package composefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/pkg/deploy"
	"github.com/bootstore/bootstore/pkg/erofs"
)

// Overlay xattrs of a metadata-only file.
const (
	XattrRedirect = "trusted.overlay.redirect"
	XattrMetacopy = "trusted.overlay.metacopy"
)

// Options tune Build.
type Options struct {
	// DataRoot is the directory that is mounted as the data-only lower
	// layer; every layer directory must be below it.
	DataRoot string
	// Verity, when not nil, returns the fs-verity SHA-256 digest of the
	// file at the image path p of layer directory layer, or nil when the
	// file has none. Digests are recorded in the metacopy xattr.
	Verity func(layer, p string) ([]byte, error)
}

// Tree is a composefs tree being built.
type Tree struct {
	Root *erofs.Inode
	// Files counts regular files redirected into the layers, Bytes their
	// size (each inode once).
	Files, Bytes int64
}

// ErrLayerOutsideRoot is returned for a layer that is not below DataRoot.
var ErrLayerOutsideRoot = errors.New("layer is not below the data root")

// Build makes the tree of layers (base first, topmost winning).
func Build(ctx context.Context, layers []string, opts Options) (*Tree, error) {
	root := path.Clean(opts.DataRoot)
	rels := make([]string, len(layers))
	for i, l := range layers {
		rel, ok := strings.CutPrefix(path.Clean(l), root+"/")
		if !ok || root == "." || root == "" {
			return nil, fmt.Errorf("composefs: %s: %w %q", l, ErrLayerOutsideRoot, opts.DataRoot)
		}
		rels[i] = "/" + rel
	}
	t := &Tree{}
	dirs := map[string]*erofs.Inode{}
	links := map[[2]uint64]*erofs.Inode{}
	err := deploy.Walk(ctx, layers, func(e *deploy.Entry) error {
		in, err := t.inode(e, layers, rels, opts, links)
		if err != nil {
			return err
		}
		if e.Path == "/" {
			t.Root = in
			dirs["/"] = in
			return nil
		}
		dir, name := path.Split(e.Path)
		parent := dirs[path.Clean(dir)]
		parent.Entries = append(parent.Entries, erofs.Dirent{Name: name, Inode: in})
		if in.Mode&unix.S_IFMT == unix.S_IFDIR {
			dirs[e.Path] = in
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("composefs: %w", err)
	}
	return t, nil
}

// inode converts one walked entry; further names of a hardlinked inode
// return the inode made for the first.
func (t *Tree) inode(e *deploy.Entry, layers, rels []string, opts Options, links map[[2]uint64]*erofs.Inode) (*erofs.Inode, error) {
	st := &e.Stat
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	key := [2]uint64{st.Dev, st.Ino}
	if !isDir && st.Nlink > 1 {
		if in, ok := links[key]; ok {
			return in, nil
		}
	}
	in := &erofs.Inode{Mode: st.Mode, UID: st.Uid, GID: st.Gid, Mtime: st.Mtim.Sec, MtimeNsec: uint32(st.Mtim.Nsec)}
	for _, x := range e.Xattrs {
		in.Xattrs = append(in.Xattrs, erofs.Xattr{Name: x.Name, Value: x.Value})
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		in.Target = e.Target
	case unix.S_IFCHR, unix.S_IFBLK:
		in.Rdev = st.Rdev
	case unix.S_IFREG:
		t.Files++
		t.Bytes += st.Size
		if st.Size == 0 {
			in.Data = []byte{} // nothing to redirect to
			break
		}
		in.Size = uint64(st.Size)
		var digest []byte
		if opts.Verity != nil {
			var err error
			if digest, err = opts.Verity(layers[e.Layer], e.Path); err != nil {
				return nil, fmt.Errorf("%s: fs-verity digest of %s: %w", layers[e.Layer], e.Path, err)
			}
		}
		in.Xattrs = append(in.Xattrs,
			erofs.Xattr{Name: XattrRedirect, Value: []byte(rels[e.Layer] + e.Path)},
			erofs.Xattr{Name: XattrMetacopy, Value: Metacopy(digest)})
	}
	if !isDir && st.Nlink > 1 {
		links[key] = in
	}
	return in, nil
}

// Metacopy is the value of trusted.overlay.metacopy for a file whose data
// has the fs-verity SHA-256 digest: overlayfs' struct ovl_metacopy
// (version 0, length, flags 0, digest algorithm 1 = SHA-256, digest), or
// empty without a digest.
func Metacopy(digest []byte) []byte {
	if len(digest) == 0 {
		return []byte{}
	}
	return append([]byte{0, byte(4 + len(digest)), 0, 1}, digest...)
}

// Lookup returns the inode at the image path p, or nil.
func (t *Tree) Lookup(p string) *erofs.Inode {
	in := t.Root
	for _, c := range strings.Split(strings.Trim(path.Clean(p), "/"), "/") {
		if c == "" {
			continue
		}
		if in == nil || in.Mode&unix.S_IFMT != unix.S_IFDIR {
			return nil
		}
		var next *erofs.Inode
		for _, e := range in.Entries {
			if e.Name == c {
				next = e.Inode
				break
			}
		}
		in = next
	}
	return in
}

// Put makes in the inode at the image path p, replacing what was there;
// p's parent must be a directory of the tree.
func (t *Tree) Put(p string, in *erofs.Inode) error {
	dir, name := path.Split(path.Clean(p))
	parent := t.Lookup(dir)
	if parent == nil || parent.Mode&unix.S_IFMT != unix.S_IFDIR || name == "" {
		return fmt.Errorf("composefs: %s: the parent is not a directory", p)
	}
	for i, e := range parent.Entries {
		if e.Name == name {
			parent.Entries[i].Inode = in
			return nil
		}
	}
	parent.Entries = append(parent.Entries, erofs.Dirent{Name: name, Inode: in})
	return nil
}

// Clone copies the subtree below in; its inodes are new, so that a
// hardlink between the copy and the rest of the tree is two inodes, while
// hardlinks inside the subtree stay hardlinks.
func Clone(in *erofs.Inode) *erofs.Inode {
	seen := map[*erofs.Inode]*erofs.Inode{}
	var clone func(*erofs.Inode) *erofs.Inode
	clone = func(in *erofs.Inode) *erofs.Inode {
		if c, ok := seen[in]; ok {
			return c
		}
		c := *in
		c.Xattrs = append([]erofs.Xattr(nil), in.Xattrs...)
		c.Entries = nil
		seen[in] = &c
		for _, e := range in.Entries {
			c.Entries = append(c.Entries, erofs.Dirent{Name: e.Name, Inode: clone(e.Inode)})
		}
		return &c
	}
	return clone(in)
}

// Write encodes the tree as an EROFS image.
func (t *Tree) Write(w io.Writer) (erofs.Stats, error) {
	return erofs.Write(w, t.Root)
}
