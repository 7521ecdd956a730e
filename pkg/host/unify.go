package host

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/pkg/fsclone"
	"github.com/bootstore/bootstore/pkg/store"
	"github.com/bootstore/bootstore/pkg/sysroot"
	"github.com/bootstore/bootstore/pkg/xattr"
)

// Unified reports what SetUnified did.
type Unified struct {
	AlreadyUnified bool
	Image          *store.Pulled
	// Shared counts the deployment files now sharing data with the store;
	// Skipped those left as they were (different content or metadata).
	Shared, Skipped int64
	// Reclaimed is the filesystem's free space gained, by statfs.
	Reclaimed int64
	Method    fsclone.Stats
}

// SetUnified onboards a split host: it pulls the booted image by its
// recorded digest into the unified store, checks that it is the image the
// booted deployment was made from, then replaces the deployment's copies of
// read-only files with reflinks (or hardlinks) of the store's identical
// files, so the host keeps one copy. The deployment's content does not
// change: a file is replaced only by one with the same bytes, mode, owner
// and times, each by an atomic rename, so a crash leaves a mix that a rerun
// completes.
func SetUnified(ctx context.Context, sr *sysroot.Sysroot, pull store.PullOptions, warn io.Writer) (*Unified, error) {
	lock, _, booted, err := lockBooted(sr)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	src, err := SourceOf(booted.Origin)
	if err != nil {
		return nil, err
	}
	st, err := OpenStore(ctx, sr, warn)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	// By digest: the tag may have moved since the deployment was made.
	pulled, err := st.PullHost(ctx, store.PinDigest(src, digest.Digest(booted.Origin.ManifestDigest)), store.HostPullOptions{PullOptions: pull, SkipBoundImages: true})
	if err != nil {
		return nil, err
	}
	if pulled.Host.ID != booted.ID {
		return nil, fmt.Errorf("%s is image %s, but the booted deployment %s was made from image %s", pulled.Host.Ref, pulled.Host.ID, booted.Name(), booted.ID)
	}
	// Also under the name the host follows, so `podman run <booted image>` works.
	if err := st.AddName(pulled.Host.ID, src); err != nil {
		return nil, err
	}
	res := &Unified{Image: pulled.Host}
	if booted.Origin.Composefs != "" {
		// Its image redirects into the store's layers: nothing to share.
		res.AlreadyUnified = true
		return res, nil
	}
	layers, err := st.LayerDirs(booted.ID)
	if err != nil {
		return nil, err
	}
	if err := st.ReleaseDriverMount(); err != nil {
		return nil, err
	}
	before, err := freeBytes(sr.Root)
	if err != nil {
		return nil, err
	}
	cloner := fsclone.New(fsclone.Auto)
	if err := shareTree(sr.DeploymentPath(*booted), layers, cloner, res); err != nil {
		return nil, err
	}
	after, err := freeBytes(sr.Root)
	if err != nil {
		return nil, err
	}
	res.Reclaimed, res.Method = after-before, cloner.Stats()
	if booted.Origin.Storage == sysroot.StorageUnified {
		res.AlreadyUnified = true
		return res, nil
	}
	booted.Origin.Storage = sysroot.StorageUnified
	return res, sr.WriteOrigin(*booted)
}

// shareTree walks a deployment and replaces each read-only regular file
// whose twin in the layers is identical.
func shareTree(tree string, layers []string, cloner *fsclone.Cloner, res *Unified) error {
	return filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(tree, p)
		if d.IsDir() && (rel == "etc" || rel == "var" || rel == filepath.Join("usr", "etc")) {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		src := twin(layers, rel)
		if src == "" {
			res.Skipped++
			return nil
		}
		shared, err := shareFile(src, p, cloner)
		if err != nil {
			return fmt.Errorf("sharing /%s with the store: %w", rel, err)
		}
		if shared {
			res.Shared++
		} else {
			res.Skipped++
		}
		return nil
	})
}

// twin finds the layer file a deployment path came from: the topmost
// layer's entry for it, if that is a regular file.
func twin(layers []string, rel string) string {
	for i := len(layers) - 1; i >= 0; i-- {
		p := filepath.Join(layers[i], rel)
		// A path through a symlink in the layer is not the layer's file.
		if resolved, err := securejoin.SecureJoin(layers[i], rel); err != nil || resolved != p {
			continue
		}
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		if fi.Mode().IsRegular() {
			return p
		}
		return ""
	}
	return ""
}

// shareFile replaces dst by a clone of src when both have the same
// content and metadata; it reports whether it did.
func shareFile(src, dst string, cloner *fsclone.Cloner) (bool, error) {
	var s, d unix.Stat_t
	if err := unix.Lstat(src, &s); err != nil {
		return false, err
	}
	if err := unix.Lstat(dst, &d); err != nil {
		return false, err
	}
	if s.Dev == d.Dev && s.Ino == d.Ino {
		return true, nil
	}
	if s.Size != d.Size || s.Mode != d.Mode || s.Uid != d.Uid || s.Gid != d.Gid || s.Size == 0 {
		return false, nil
	}
	if same, err := sameContent(src, dst); err != nil || !same {
		return false, err
	}
	tmp := filepath.Join(filepath.Dir(dst), ".bootstore-share-"+filepath.Base(dst))
	os.Remove(tmp)
	method, err := cloner.Clone(src, tmp, true)
	if err != nil {
		return false, err
	}
	if method == fsclone.MethodCopy {
		os.Remove(tmp) // a copy reclaims nothing
		return false, nil
	}
	if method == fsclone.MethodReflink {
		// A new inode: give it the old one's metadata.
		if err := copyMeta(dst, tmp, &d); err != nil {
			os.Remove(tmp)
			return false, err
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return false, err
	}
	return true, nil
}

func copyMeta(from, to string, st *unix.Stat_t) error {
	if err := os.Lchown(to, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := os.Chmod(to, os.FileMode(st.Mode&0o7777)|modeBits(st.Mode)); err != nil {
		return err
	}
	if err := xattr.Copy(xattr.Path(from), xattr.Path(to)); err != nil {
		return err
	}
	return unix.UtimesNano(to, []unix.Timespec{st.Atim, st.Mtim})
}

// modeBits maps setuid/setgid/sticky to os.FileMode.
func modeBits(m uint32) os.FileMode {
	var out os.FileMode
	if m&unix.S_ISUID != 0 {
		out |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		out |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		out |= os.ModeSticky
	}
	return out
}

func sameContent(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ba, bb := make([]byte, 256<<10), make([]byte, 256<<10)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == ea, nil
		}
		if ea != nil {
			return false, ea
		}
		if eb != nil {
			return false, eb
		}
	}
}

func freeBytes(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	return int64(st.Bfree) * int64(st.Bsize), nil
}
