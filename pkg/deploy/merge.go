package deploy

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/pkg/xattr"
)

const (
	aufsPrefix = ".wh."
	aufsMeta   = ".wh..wh."
	aufsOpaque = ".wh..wh..opq"

	openDir = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
)

// builder is the state of one Build. links, followers and the dirMeta tree
// belong to the walking goroutine; workers only touch the counters and err.
type builder struct {
	layers   []string
	cloner   FileCloner
	prefixes []string
	// dstDev is the filesystem the tree is written to.
	dstDev uint64

	ctx       context.Context
	cancel    context.CancelFunc
	jobs      chan fileJob
	links     map[linkKey]string // first image path of every hardlinked inode
	followers []follower         // further names, linked once all files exist

	errMu sync.Mutex
	err   error

	files, dirs, symlinks, hardlinks, others, bytes, shared atomic.Int64
}

// linkKey names a hardlinked inode; mutable and immutable names of one inode
// are kept apart (see the package documentation).
type linkKey struct {
	dev, ino uint64
	mutable  bool
}

type follower struct {
	leader, path string
	layer        int
}

// listing is one layer's view of one merged directory.
type listing struct {
	layer   int
	dir     *dirRef
	st      unix.Stat_t
	xattrs  []xattr.Attr
	entries map[string]*unix.Stat_t
	wh      map[string]bool // names this layer whites out
	opaque  bool
}

// dirMeta is what a directory of dst gets once its contents are complete.
type dirMeta struct {
	name     string
	layer    int
	st       unix.Stat_t
	xattrs   []xattr.Attr
	children []*dirMeta
}

func (b *builder) errAt(layer int, p string, err error) error {
	return &Error{Layer: b.layers[layer], Path: p, Err: err}
}

// fail records the first error and stops the walk and the workers.
func (b *builder) fail(err error) {
	b.errMu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.errMu.Unlock()
	b.cancel()
}

func (b *builder) result() *Result {
	return &Result{
		Files: b.files.Load(), Dirs: b.dirs.Load(), Symlinks: b.symlinks.Load(),
		Hardlinks: b.hardlinks.Load(), Others: b.others.Load(),
		Bytes: b.bytes.Load(), Shared: b.shared.Load(),
	}
}

// run builds the union into the empty directory tmp.
func (b *builder) run(parent context.Context, tmp string, workers int) error {
	b.ctx, b.cancel = context.WithCancel(parent)
	defer b.cancel()
	rootFd, err := unix.Open(tmp, openDir, 0)
	if err != nil {
		return &Error{Path: tmp, Err: err}
	}
	defer unix.Close(rootFd)
	var rootSt unix.Stat_t
	if err := unix.Fstat(rootFd, &rootSt); err != nil {
		return &Error{Path: tmp, Err: err}
	}
	b.dstDev = rootSt.Dev

	var lists []*listing
	for i := len(b.layers) - 1; i >= 0; i-- {
		fd, err := unix.Open(b.layers[i], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
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
	root := &dirMeta{layer: lists[0].layer, st: lists[0].st, xattrs: lists[0].xattrs}
	b.dirs.Add(1)

	b.jobs = make(chan fileJob, 4*workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.worker()
		}()
	}
	dst := newRef(rootFd)
	dst.hold() // rootFd stays open for the steps after the walk
	if err := b.mergeDir("/", lists, dst, root); err != nil && !errors.Is(err, b.ctx.Err()) {
		b.fail(err) // a cancellation is reported by firstErr
	}
	close(b.jobs)
	wg.Wait()
	if err := b.firstErr(parent); err != nil {
		return err
	}
	if err := b.linkFollowers(rootFd); err != nil {
		return err
	}
	if err := b.applyDirs(rootFd, "/", root); err != nil {
		return err
	}
	if err := setDirMeta(rootFd, root); err != nil {
		return b.errAt(root.layer, "/", err)
	}
	return b.firstErr(parent)
}

// firstErr prefers the recorded failure over the cancellation it caused.
func (b *builder) firstErr(parent context.Context) error {
	b.errMu.Lock()
	defer b.errMu.Unlock()
	if b.err != nil {
		return b.err
	}
	if err := parent.Err(); err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	return nil
}

func release(lists []*listing) {
	for _, l := range lists {
		l.dir.release()
	}
}

// readListing reads one layer's directory (owning ref) at image path p.
func (b *builder) readListing(ref *dirRef, layer int, p string, root bool) (*listing, error) {
	l := &listing{layer: layer, dir: ref, entries: map[string]*unix.Stat_t{}, wh: map[string]bool{}}
	fail := func(err error) (*listing, error) {
		ref.release()
		return nil, b.errAt(layer, p, err)
	}
	if err := unix.Fstat(ref.fd, &l.st); err != nil {
		return fail(err)
	}
	xs, err := readXattrs(ref.fd, "")
	if err != nil {
		return fail(err)
	}
	if err := unsupported(xs); err != nil {
		return fail(err)
	}
	for _, x := range xs {
		if (x.Name == "trusted.overlay.opaque" || x.Name == "user.overlay.opaque") && string(x.Value) == "y" {
			l.opaque = true
		}
	}
	l.xattrs = public(xs)
	names, err := readNames(ref.fd)
	if err != nil {
		return fail(err)
	}
	for _, name := range names {
		switch {
		case name == aufsOpaque:
			l.opaque = true
			continue
		case strings.HasPrefix(name, aufsMeta):
			continue
		case strings.HasPrefix(name, aufsPrefix):
			l.wh[name[len(aufsPrefix):]] = true
			continue
		}
		st := new(unix.Stat_t)
		if err := unix.Fstatat(ref.fd, name, st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fail(fmt.Errorf("%s: %w", name, err))
		}
		if st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0 {
			l.wh[name] = true
			continue
		}
		l.entries[name] = st
	}
	// overlayfs never treats a layer's root as opaque.
	l.opaque = l.opaque && !root
	return l, nil
}

func readNames(fd int) ([]string, error) {
	buf := make([]byte, 32<<10)
	var names []string
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("getdents: %w", err)
		} else if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// resolve applies the overlayfs rules to one name of a merged directory
// (lists top first): it returns the listing and stat of the entry shown, or
// nil if none is, and for a directory the listings that merge into it.
func resolve(name string, lists []*listing) (top *listing, st *unix.Stat_t, subs []*listing) {
	for _, l := range lists {
		s, ok := l.entries[name]
		if !ok {
			if l.wh[name] {
				break // a whiteout hides this name here and below
			}
			continue
		}
		isDir := s.Mode&unix.S_IFMT == unix.S_IFDIR
		if top == nil {
			top, st = l, s
			if !isDir {
				return top, st, nil
			}
		} else if !isDir {
			break // a lower non-directory ends the merge
		}
		subs = append(subs, l)
		if l.wh[name] {
			break // AUFS: a directory and its whiteout in one layer
		}
	}
	return top, st, subs
}

// mergeDir fills dst (image path p) from lists, top first, and releases both.
func (b *builder) mergeDir(p string, lists []*listing, dst *dirRef, meta *dirMeta) error {
	defer release(lists)
	defer dst.release()
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
			return err
		}
		top, st, subs := resolve(name, lists)
		if top == nil {
			continue
		}
		cp := p + "/" + name
		if p == "/" {
			cp = p + name
		}
		var err error
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err = b.mkdir(cp, name, subs, dst, meta)
		} else {
			err = b.nondir(top, cp, name, st, dst)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// mkdir creates directory name in dst and merges subs (top first) into it.
func (b *builder) mkdir(p, name string, subs []*listing, dst *dirRef, meta *dirMeta) error {
	if err := unix.Mkdirat(dst.fd, name, 0o700); err != nil {
		return b.errAt(subs[0].layer, p, err)
	}
	fd, err := unix.Openat(dst.fd, name, openDir, 0)
	if err != nil {
		return b.errAt(subs[0].layer, p, err)
	}
	child := newRef(fd)
	lists, err := b.subListings(p, name, subs)
	if err != nil {
		child.release()
		return err
	}
	cm := &dirMeta{name: name, layer: lists[0].layer, st: lists[0].st, xattrs: lists[0].xattrs}
	meta.children = append(meta.children, cm)
	b.dirs.Add(1)
	return b.mergeDir(p, lists, child, cm)
}

// subListings reads the listings of directory name (image path p) in the
// layers of subs (top first), down to the first opaque one.
func (b *builder) subListings(p, name string, subs []*listing) ([]*listing, error) {
	var lists []*listing
	for _, l := range subs {
		sfd, err := unix.Openat(l.dir.fd, name, openDir, 0)
		var cl *listing
		if err == nil {
			cl, err = b.readListing(newRef(sfd), l.layer, p, false)
		} else {
			err = b.errAt(l.layer, p, err)
		}
		if err != nil {
			release(lists)
			return nil, err
		}
		lists = append(lists, cl)
		if cl.opaque {
			break
		}
	}
	return lists, nil
}

// nondir creates everything but a directory: files go to the workers,
// hardlinks are remembered for linkFollowers.
func (b *builder) nondir(top *listing, p, name string, st *unix.Stat_t, dst *dirRef) error {
	mutable := b.mutable(p)
	if st.Nlink > 1 {
		k := linkKey{dev: uint64(st.Dev), ino: st.Ino, mutable: mutable}
		if leader, ok := b.links[k]; ok {
			b.followers = append(b.followers, follower{leader: leader, path: p, layer: top.layer})
			return nil
		}
		b.links[k] = p
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		j := fileJob{src: top.dir, dst: dst, name: name, path: p, layer: top.layer, st: *st, mutable: mutable}
		top.dir.hold()
		dst.hold()
		select {
		case b.jobs <- j:
			return nil
		case <-b.ctx.Done():
			j.release()
			return b.ctx.Err()
		}
	case unix.S_IFLNK:
		return b.symlink(top, p, name, st, dst)
	default:
		return b.special(top, p, name, st, dst)
	}
}
