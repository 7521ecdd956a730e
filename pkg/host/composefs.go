package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/pkg/composefs"
	"github.com/bootstore/bootstore/pkg/deploy"
	"github.com/bootstore/bootstore/pkg/embedded"
	"github.com/bootstore/bootstore/pkg/erofs"
	"github.com/bootstore/bootstore/pkg/store"
	"github.com/bootstore/bootstore/pkg/sysroot"
)

// A composefs deployment is a directory holding only what must be real:
//
//	<id>.<serial>/.bootstore.cfs   the EROFS image of the whole tree
//	<id>.<serial>/etc/             the writable /etc (a copy, merged at upgrades)
//
// The image holds the image's union with the fix-ups a tree deployment gets:
// /usr/etc is the image's /etc (its files redirect into the layers like
// every other file), /var is an empty directory, /usr/lib/bootc/storage
// links to the unified store. Its /etc is the image's /etc too; at boot the
// deployment's real etc/ is mounted over it (as ostree and bootc do), and
// the stateroot's var over /var. The image's digest is the origin's
// composefs= key.
const ComposefsImage = ".bootstore.cfs"

// ErrComposefsNeedsUnified is returned for a composefs deployment of a split
// host: the image's files must stay in the unified store.
var ErrComposefsNeedsUnified = errors.New("composefs deployments need the unified store")

// ComposefsMountOptions are how the deployment d of the store st is mounted.
func ComposefsMountOptions(st *store.Store, d sysroot.Deployment) composefs.MountOptions {
	return composefs.MountOptions{DataRoot: st.LayerDataRoot(), RequireVerity: d.Origin.ComposefsVerity}
}

// deployComposefs writes a composefs deployment of the image id.
func deployComposefs(ctx context.Context, sr *sysroot.Sysroot, st *store.Store, id string, layers []string, d sysroot.Deployment, opts DeployOptions) (*Deployed, error) {
	start := time.Now()
	copts := composefs.Options{DataRoot: st.LayerDataRoot()}
	if opts.Verity {
		copts.Verity = enableVerity
	}
	tree, err := composefs.Build(ctx, layers, copts)
	var origVar *erofs.Inode
	if err == nil {
		origVar = tree.Lookup("/var")
		err = composefsFixups(tree)
	}
	if err != nil {
		return nil, fmt.Errorf("deploying image %s as composefs: %w", id, err)
	}
	staging := filepath.Join(sr.DeployDir(opts.Stateroot), stagingPrefix+d.Name())
	if err := removeStaging(staging); err != nil {
		return nil, err
	}
	if err := os.Mkdir(staging, 0o755); err != nil {
		return nil, err
	}
	out, err := func() (*Deployed, error) {
		digest, err := writeImage(tree.Root, filepath.Join(staging, ComposefsImage))
		if err != nil {
			return nil, err
		}
		d.Origin.Composefs, d.Origin.ComposefsVerity = digest, opts.Verity
		view, release, err := mountComposefs(filepath.Join(staging, ComposefsImage), ComposefsMountOptions(st, d))
		if err != nil {
			return nil, err
		}
		defer release()
		if err := copyEtc(ctx, view, filepath.Join(staging, "etc")); err != nil {
			return nil, err
		}
		if err := seedVarFromImage(ctx, sr, st, d, origVar); err != nil {
			return nil, err
		}
		return commitDeployment(sr, view, staging, d, opts)
	}()
	if err != nil {
		os.RemoveAll(staging)
		return nil, fmt.Errorf("deploying image %s as composefs: %w", id, err)
	}
	out.Build = &deploy.Result{Files: tree.Files, Bytes: tree.Bytes}
	out.Duration = time.Since(start)
	return out, nil
}

// enableVerity turns fs-verity on for a layer file and returns its digest.
func enableVerity(layer, p string) ([]byte, error) {
	full := filepath.Join(layer, p)
	if err := composefs.EnableVerity(full); err != nil {
		return nil, err
	}
	return composefs.MeasureVerity(full)
}

// composefsFixups makes the tree what a tree deployment holds: /usr/etc,
// an empty /var, the storage link.
func composefsFixups(tree *composefs.Tree) error {
	root := tree.Root
	usr := tree.Lookup("/usr")
	if usr == nil || usr.Mode&unix.S_IFMT != unix.S_IFDIR {
		return ErrNoUsr
	}
	// The union's root is the top layer's directory, whose mtime is when
	// containers/storage extracted it: take /usr's instead so that one
	// image gives one composefs image on every host (composefs-rs copies
	// all of /usr's metadata to the root; containers/storage already gives
	// the root a fixed owner and mode).
	root.Mtime, root.MtimeNsec = usr.Mtime, usr.MtimeNsec
	usrEtc := &erofs.Inode{Mode: unix.S_IFDIR | 0o755, Mtime: usr.Mtime, MtimeNsec: usr.MtimeNsec}
	if etc := tree.Lookup("/etc"); etc != nil {
		if etc.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("%w: the image's /etc is not a directory", ErrBadTree)
		}
		usrEtc = composefs.Clone(etc)
	}
	if err := tree.Put("/usr/etc", usrEtc); err != nil {
		return err
	}
	emptyVar := &erofs.Inode{Mode: unix.S_IFDIR | 0o755, Mtime: root.Mtime, MtimeNsec: root.MtimeNsec}
	if v := tree.Lookup("/var"); v != nil && v.Mode&unix.S_IFMT == unix.S_IFDIR {
		emptyVar.Mode, emptyVar.Mtime, emptyVar.MtimeNsec = unix.S_IFDIR|v.Mode&0o7777, v.Mtime, v.MtimeNsec
	}
	if err := tree.Put("/var", emptyVar); err != nil {
		return err
	}
	if err := composefsDirs(tree, usr, "/usr/lib/bootc"); err != nil {
		return err
	}
	if err := tree.Put("/usr/lib/bootc/storage", &erofs.Inode{Mode: unix.S_IFLNK | 0o777, Mtime: usr.Mtime, MtimeNsec: usr.MtimeNsec, Target: StorageLink}); err != nil {
		return err
	}
	return composefsEmptyEmbeddedStore(tree, usr)
}

// composefsDirs makes sure every directory of dir below /usr exists,
// adding missing ones as plain directories with /usr's mtime.
func composefsDirs(tree *composefs.Tree, usr *erofs.Inode, dir string) error {
	p := "/usr"
	for _, name := range strings.Split(strings.TrimPrefix(dir, "/usr/"), "/") {
		p += "/" + name
		in := tree.Lookup(p)
		if in == nil {
			in = &erofs.Inode{Mode: unix.S_IFDIR | 0o755, Mtime: usr.Mtime, MtimeNsec: usr.MtimeNsec}
			if err := tree.Put(p, in); err != nil {
				return err
			}
		} else if in.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("%w: the image's %s is not a directory", ErrBadTree, p)
		}
	}
	return nil
}

// composefsEmptyEmbeddedStore gives an image that embeds no apps the same
// empty embedded store a tree deployment gets (embedded.EnsureStore), so
// that podman's additional image store exists on composefs hosts too.
func composefsEmptyEmbeddedStore(tree *composefs.Tree, usr *erofs.Inode) error {
	if in := tree.Lookup(embedded.DefaultPath); in != nil {
		if in.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("%w: the image's %s is not a directory", ErrBadTree, embedded.DefaultPath)
		}
		return nil
	}
	if err := composefsDirs(tree, usr, path.Dir(embedded.DefaultPath)); err != nil {
		return err
	}
	dir := func(mode uint32) *erofs.Inode {
		return &erofs.Inode{Mode: unix.S_IFDIR | mode, Mtime: usr.Mtime, MtimeNsec: usr.MtimeNsec}
	}
	empty := func() *erofs.Inode {
		return &erofs.Inode{Mode: unix.S_IFREG | 0o644, Mtime: usr.Mtime, MtimeNsec: usr.MtimeNsec, Data: []byte{}}
	}
	for _, e := range []struct {
		rel string
		in  *erofs.Inode
	}{
		{"", dir(0o755)}, {"/overlay", dir(0o700)},
		{"/overlay-images", dir(0o700)}, {"/overlay-images/images.lock", empty()},
		{"/overlay-layers", dir(0o700)}, {"/overlay-layers/layers.lock", empty()},
	} {
		if err := tree.Put(embedded.DefaultPath+e.rel, e.in); err != nil {
			return err
		}
	}
	return nil
}

// writeImage writes the image durably and returns its digest.
func writeImage(root *erofs.Inode, path string) (string, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := erofs.Write(io.MultiWriter(f, h), root); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), f.Close()
}

// mountComposefs mounts a composefs image read-only and returns a path to
// it, /proc/self/fd/N: the mount is detached from the directory it was made
// on as soon as the descriptor holds it, so that no mount is left behind,
// even when the process is killed. release closes the descriptor, which
// unmounts it.
func mountComposefs(image string, opts composefs.MountOptions) (string, func(), error) {
	mnt, err := os.MkdirTemp("", "bootstore-deployment-")
	if err != nil {
		return "", nil, err
	}
	defer os.Remove(mnt)
	if err := composefs.Mount(image, mnt, opts); err != nil {
		return "", nil, err
	}
	fd, err := unix.Open(mnt, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if uerr := unix.Unmount(mnt, unix.MNT_DETACH); err == nil && uerr != nil {
		unix.Close(fd)
		err = uerr
	}
	if err != nil {
		return "", nil, fmt.Errorf("composefs: holding the mount of %s: %w", image, err)
	}
	return fmt.Sprintf("/proc/self/fd/%d", fd), func() { unix.Close(fd) }, nil
}

// copyEtc copies the mounted image's /etc (faithfully: owners, modes,
// xattrs, times, hardlinks) as the deployment's writable /etc.
func copyEtc(ctx context.Context, view, dst string) error {
	etc := filepath.Join(view, "etc")
	if _, err := os.Lstat(etc); errors.Is(err, os.ErrNotExist) {
		return os.Mkdir(dst, 0o755)
	}
	if _, err := deploy.Build(ctx, []string{etc}, dst, deploy.Options{MutablePrefixes: []string{"/"}, Workers: 1}); err != nil {
		return fmt.Errorf("copying /etc: %w", err)
	}
	return nil
}

// seedVarFromImage fills an empty stateroot /var with the image's /var
// (origVar, before the fix-ups emptied it), read through a small composefs
// image of it alone.
func seedVarFromImage(ctx context.Context, sr *sysroot.Sysroot, st *store.Store, d sysroot.Deployment, origVar *erofs.Inode) error {
	stateVar := sr.VarDir(d.Stateroot)
	entries, err := os.ReadDir(stateVar)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if len(entries) > 0 || origVar == nil || origVar.Mode&unix.S_IFMT != unix.S_IFDIR {
		return os.MkdirAll(stateVar, 0o755)
	}
	img := filepath.Join(sr.TempDir(), "var-"+d.Name()+".cfs")
	os.Remove(img)
	defer os.Remove(img)
	if _, err := writeImage(composefs.Clone(origVar), img); err != nil {
		return err
	}
	view, release, err := mountComposefs(img, ComposefsMountOptions(st, d))
	if err != nil {
		return err
	}
	defer release()
	os.Remove(stateVar)
	if err := os.MkdirAll(filepath.Dir(stateVar), 0o755); err != nil {
		return err
	}
	if _, err := deploy.Build(ctx, []string{view}, stateVar, deploy.Options{MutablePrefixes: []string{"/"}, Workers: 1}); err != nil {
		return fmt.Errorf("seeding %s: %w", stateVar, err)
	}
	return nil
}

// DeploymentTree returns a directory showing d's tree: the deployment
// itself, or for a composefs deployment its image mounted read-only (with
// the store st); release undoes the mount.
func DeploymentTree(sr *sysroot.Sysroot, st *store.Store, d sysroot.Deployment) (string, func(), error) {
	if d.Origin.Composefs == "" {
		return sr.DeploymentPath(d), func() {}, nil
	}
	return mountComposefs(filepath.Join(sr.DeploymentPath(d), ComposefsImage), ComposefsMountOptions(st, d))
}
