// Package deploy flattens an image's layers into a deployment tree: a plain
// directory holding exactly what the kernel's overlayfs shows when those
// layers are mounted as lowerdirs (mount -t overlay -o lowerdir=TOP:...:BASE).
//
// # Lifecycle
//
// The caller (pkg/store) resolves an image to its layer directories, base
// first, and picks dst, a path that must not exist yet. [Build] then
//
//  1. creates DST.tmp-XXXX next to dst (same filesystem, mode 0700);
//  2. walks the layers top first, one merged directory at a time, and applies
//     overlayfs rules: the topmost entry of a path wins, whiteouts hide,
//     opaque directories and non-directories cut off everything below;
//  3. creates directories, symlinks (verbatim, never followed) and special
//     files in the walking goroutine, and hands regular files to
//     [Options.Workers] goroutines that clone them through [Options.Cloner]
//     (shared inodes allowed) or copy them (under [Options.MutablePrefixes]);
//  4. links the remaining names of every hardlinked inode, then sets
//     ownership, mode, xattrs and times of directories, deepest first;
//  5. syncfs, renames the temporary tree to dst (RENAME_NOREPLACE) and
//     fsyncs dst's parent.
//
// On any error or cancellation the temporary tree is removed and dst does
// not exist. After a crash [RemoveLeftovers] removes what a killed Build left.
// Nothing outside the temporary tree is ever written: entries are created
// relative to directory file descriptors opened with O_NOFOLLOW, and paths
// through the new tree only ever pass directories that Build made itself.
//
// # Layer format
//
// A layer is a directory as containers/storage's overlay driver keeps it (a
// layer's "diff" directory):
//   - a whiteout is a character device 0/0; it hides the same name in lower
//     layers and is not shown itself;
//   - an opaque directory carries the xattr trusted.overlay.opaque=y (or
//     user.overlay.opaque=y); lower layers' contents of it are hidden;
//   - AUFS-style markers are honoured too, for layers that were extracted
//     without conversion: a file ".wh.NAME" whites out NAME, ".wh..wh..opq"
//     makes its directory opaque, other ".wh..wh.*" names are ignored.
//
// # Differences from overlayfs
//
//   - Build honours AUFS markers and user.overlay.opaque; the kernel honours
//     neither (the latter only with -o userxattr).
//   - Xattrs named trusted.overlay.* and user.overlay.* are overlay
//     metadata and are not copied. Layers written by an overlay upper with
//     redirect_dir or metacopy (trusted.overlay.redirect / .metacopy) are
//     rejected: their content lives in another layer. "xwhiteouts" (zero-size
//     files with an overlay.whiteout xattr, kernel 6.7) are not interpreted.
//   - The kernel reports the lower inode's nlink, which counts names hidden
//     by whiteouts; in dst, nlink counts the names that are shown.
//   - In a directory that only one layer has, the kernel's readdir lists
//     that layer's whiteouts although looking them up fails (ENOENT); dst
//     has no whiteouts anywhere.
//   - A hardlinked inode with names both inside and outside a mutable prefix
//     becomes two inodes, so that the mutable copy never shares data with the
//     layers or with the immutable names.
package deploy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// FileCloner creates dst, which does not exist, with src's content. Build
// calls it only for files outside MutablePrefixes, with shared=true (a
// hardlink is acceptable); mutable files are copied by Build itself. src and dst may be given as
// /proc/self/fd/N/NAME so that arbitrarily deep trees work; ownership, mode,
// xattrs and times are set by Build afterwards unless dst is src's inode.
type FileCloner interface {
	Clone(src, dst string, shared bool) error
}

// DirLinker is an optional fast path of a FileCloner: LinkAt links srcName
// in the directory srcDir as dstName in dstDir when the cloner would
// hardlink it anyway (st is the source's stat, dstDev the filesystem of dst)
// and reports whether it did; when it did not, Build calls Clone. A linked
// file is the layer's inode, so Build neither reads its xattrs nor sets its
// metadata: layers extracted by containers/storage carry no overlay
// redirect or metacopy xattrs for it to refuse.
type DirLinker interface {
	LinkAt(srcDir int, srcName string, st *unix.Stat_t, dstDir int, dstName string, dstDev uint64) (bool, error)
}

// ClonerFunc adapts a function to [FileCloner], for example
//
//	deploy.ClonerFunc(func(src, dst string, shared bool) error {
//		_, err := c.Clone(src, dst, shared) // fsclone.Cloner
//		return err
//	})
type ClonerFunc func(src, dst string, shared bool) error

// Clone calls f(src, dst, shared).
func (f ClonerFunc) Clone(src, dst string, shared bool) error { return f(src, dst, shared) }

// DefaultMutablePrefixes are the paths copied, never shared, when
// [Options.MutablePrefixes] is nil.
var DefaultMutablePrefixes = []string{"/etc"}

// Options tune [Build]. The zero value copies every file with NumCPU workers.
type Options struct {
	// Cloner clones regular files; nil copies them (keeping holes).
	Cloner FileCloner
	// MutablePrefixes are image paths ("/etc") whose files must never share
	// an inode or data with the layers: they are copied byte by byte, not
	// through the Cloner; nil means DefaultMutablePrefixes, an empty non-nil
	// slice means none.
	MutablePrefixes []string
	// Workers is the number of files cloned in parallel; <= 0 means
	// runtime.NumCPU().
	Workers int
}

// Result counts what Build wrote into dst.
type Result struct {
	Files     int64 // regular-file inodes
	Dirs      int64 // directories, the root included
	Symlinks  int64 // symlink inodes
	Hardlinks int64 // further names of an inode already counted above
	Others    int64 // fifos, sockets, character and block devices
	Bytes     int64 // size of the regular files, each inode once
	Shared    int64 // regular files that are a layer's inode (Cloner hardlinked them)
}

// Error is returned by Build for a failure that concerns one entry.
type Error struct {
	Layer string // the layer directory, "" for an error about dst itself
	Path  string // the image path, "/usr/bin/x"
	Err   error
}

func (e *Error) Error() string {
	if e.Layer == "" {
		return fmt.Sprintf("deploy: %s: %v", e.Path, e.Err)
	}
	return fmt.Sprintf("deploy: layer %s: %s: %v", e.Layer, e.Path, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrUnsupported is wrapped by errors about layers that use overlay features
// Build does not implement (redirect_dir, metacopy).
var ErrUnsupported = errors.New("unsupported overlay layer feature")

const tmpInfix = ".tmp-"

// Build writes the union of layers (base first, topmost winning) into dst,
// which must not exist. See the package documentation for the steps.
func Build(ctx context.Context, layers []string, dst string, opts Options) (*Result, error) {
	if len(layers) == 0 {
		return nil, fmt.Errorf("deploy: %s: no layers", dst)
	}
	dst, err := filepath.Abs(dst)
	if err != nil {
		return nil, fmt.Errorf("deploy: %w", err)
	}
	if _, err := os.Lstat(dst); err == nil {
		return nil, &Error{Path: dst, Err: fs.ErrExist}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, &Error{Path: dst, Err: err}
	}
	if err := unix.Access("/proc/self/fd", unix.F_OK); err != nil {
		return nil, fmt.Errorf("deploy: /proc is not mounted: %w", err)
	}
	prefixes, err := cleanPrefixes(opts.MutablePrefixes)
	if err != nil {
		return nil, err
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	parent, base := filepath.Dir(dst), filepath.Base(dst)
	tmp, err := os.MkdirTemp(parent, base+tmpInfix)
	if err != nil {
		return nil, &Error{Path: dst, Err: err}
	}
	done := false
	defer func() {
		if !done {
			_ = os.RemoveAll(tmp)
		}
	}()
	b := &builder{layers: layers, cloner: opts.Cloner, prefixes: prefixes, links: map[linkKey]string{}}
	if err := b.run(ctx, tmp, workers); err != nil {
		return nil, err
	}
	if err := commit(parent, filepath.Base(tmp), base); err != nil {
		return nil, &Error{Path: dst, Err: err}
	}
	done = true
	return b.result(), nil
}

// commit makes the finished tree durable and gives it its final name.
func commit(parent, tmpName, name string) error {
	pfd, err := unix.Open(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	tfd, err := unix.Openat(pfd, tmpName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	err = unix.Syncfs(tfd)
	unix.Close(tfd)
	if err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	if err := unix.Renameat2(pfd, tmpName, pfd, name, unix.RENAME_NOREPLACE); err != nil {
		return fmt.Errorf("rename %s: %w", tmpName, err)
	}
	return unix.Fsync(pfd)
}

// RemoveLeftovers removes the temporary trees that Build calls for dst left
// behind when they were killed: siblings of dst named BASE.tmp-*. Only call
// it while no Build for dst runs (under the sysroot lock).
func RemoveLeftovers(dst string) error {
	dst, err := filepath.Abs(dst)
	if err != nil {
		return err
	}
	parent, base := filepath.Dir(dst), filepath.Base(dst)
	entries, err := os.ReadDir(parent)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), base+tmpInfix) {
			errs = append(errs, os.RemoveAll(filepath.Join(parent, e.Name())))
		}
	}
	return errors.Join(errs...)
}

// cleanPrefixes normalizes mutable prefixes to absolute, clean image paths.
func cleanPrefixes(in []string) ([]string, error) {
	if in == nil {
		in = DefaultMutablePrefixes
	}
	out := make([]string, 0, len(in))
	for _, p := range in {
		if !strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("deploy: mutable prefix %q is not absolute", p)
		}
		out = append(out, path.Clean(p))
	}
	return out, nil
}

// mutable reports whether the image path p lies under a mutable prefix.
func (b *builder) mutable(p string) bool {
	for _, pre := range b.prefixes {
		if pre == "/" || p == pre || strings.HasPrefix(p, pre+"/") {
			return true
		}
	}
	return false
}
