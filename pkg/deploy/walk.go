package deploy

import (
	"context"
	"fmt"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/pkg/xattr"
)

// Entry is one path of the union of layers, as [Walk] reports it: what
// Build would write there, and which layer it comes from.
type Entry struct {
	// Path is the image path, "/" for the root, "/usr/bin/x" below it.
	Path string
	// Layer is the index in the layers given to Walk (base first) of the
	// layer whose entry is shown: for a directory the topmost layer that
	// has it, whose metadata it takes.
	Layer int
	// Stat is that layer entry's stat. Dev and Ino identify hardlinks:
	// two non-directory entries with equal Dev and Ino are one inode.
	Stat unix.Stat_t
	// Xattrs are the entry's xattrs without overlay's own.
	Xattrs []xattr.Attr
	// Target is a symlink's target.
	Target string
}

// Walk calls fn for every path of the union of layers (base first, topmost
// winning), with the overlayfs rules [Build] applies, without writing
// anything: a directory before its contents, names sorted bytewise. Layers
// using redirects or metacopy are refused as Build refuses them. An error
// from fn stops the walk and is returned.
func Walk(ctx context.Context, layers []string, fn func(*Entry) error) error {
	if len(layers) == 0 {
		return fmt.Errorf("deploy: walk: no layers")
	}
	b := &builder{layers: layers, ctx: ctx}
	var lists []*listing
	for i := len(layers) - 1; i >= 0; i-- {
		fd, err := unix.Open(layers[i], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == nil {
			var l *listing
			if l, err = b.readListing(newRef(fd), i, "/", true); err == nil {
				lists = append(lists, l)
				continue
			}
		}
		release(lists)
		return b.errAt(i, "/", err)
	}
	if err := fn(&Entry{Path: "/", Layer: lists[0].layer, Stat: lists[0].st, Xattrs: lists[0].xattrs}); err != nil {
		release(lists)
		return err
	}
	return b.walkDir("/", lists, fn)
}

// walkDir reports the contents of the merged directory p (lists top first)
// and releases lists.
func (b *builder) walkDir(p string, lists []*listing, fn func(*Entry) error) error {
	defer release(lists)
	seen := map[string]bool{}
	var names []string
	for _, l := range lists {
		for name := range l.entries {
			if !seen[name] {
				seen[name] = true
				names = append(names, name)
			}
		}
	}
	sort.Strings(names)
	for _, name := range names {
		if err := b.ctx.Err(); err != nil {
			return fmt.Errorf("deploy: %w", err)
		}
		top, st, subs := resolve(name, lists)
		if top == nil {
			continue
		}
		cp := p + "/" + name
		if p == "/" {
			cp = p + name
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			e, err := b.describe(top, cp, name, st)
			if err != nil {
				return err
			}
			if err := fn(e); err != nil {
				return err
			}
			continue
		}
		sub, err := b.subListings(cp, name, subs)
		if err != nil {
			return err
		}
		if err := fn(&Entry{Path: cp, Layer: sub[0].layer, Stat: sub[0].st, Xattrs: sub[0].xattrs}); err != nil {
			release(sub)
			return err
		}
		if err := b.walkDir(cp, sub, fn); err != nil {
			return err
		}
	}
	return nil
}

// describe reads a non-directory's xattrs and symlink target.
func (b *builder) describe(top *listing, p, name string, st *unix.Stat_t) (*Entry, error) {
	e := &Entry{Path: p, Layer: top.layer, Stat: *st}
	xs, err := readXattrs(-1, procPath(top.dir.fd, name))
	if err != nil {
		return nil, b.errAt(top.layer, p, err)
	}
	if err := unsupported(xs); err != nil {
		return nil, b.errAt(top.layer, p, err)
	}
	e.Xattrs = public(xs)
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		if e.Target, err = readlinkat(top.dir.fd, name); err != nil {
			return nil, b.errAt(top.layer, p, err)
		}
	}
	return e, nil
}
