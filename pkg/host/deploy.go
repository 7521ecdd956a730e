// Package host carries out the operations that change a host: it composes
// the unified store (pkg/store), the deployment builder (pkg/deploy), the
// file cloner (pkg/fsclone), the boot entries (pkg/bls) and the sysroot's
// bookkeeping (pkg/sysroot).
//
// Lifecycle of a deployment: an image in a store is flattened into
// ostree/deploy/<stateroot>/deploy/.staging-<id> (Deploy), fixed up there
// (/usr/etc, /var, /usr/lib/bootc/storage, an empty embedded store where
// the image has none: pkg/embedded), its kernel copied under /boot,
// and only then renamed to <id>.<serial> beside its origin file. A boot
// entry makes it bootable (Install, and later upgrade/finalize). Anything a
// crash leaves behind is not referenced by a boot entry or the staged
// record and is removed by the next mutating command (RemoveLeftovers).
package host

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"

	"github.com/bootstore/bootstore/pkg/bls"
	"github.com/bootstore/bootstore/pkg/deploy"
	"github.com/bootstore/bootstore/pkg/embedded"
	"github.com/bootstore/bootstore/pkg/fsclone"
	"github.com/bootstore/bootstore/pkg/store"
	"github.com/bootstore/bootstore/pkg/sysroot"
)

// ErrNoUsr is returned for an image that has no /usr to boot.
var ErrNoUsr = errors.New("image has no /usr")

// usrIsDirectory refuses a tree whose /usr is missing or not a directory.
// A symlink is named as such: ostree-prepare-root mounts the deployment's
// /usr read-only, which a link pointing elsewhere (even outside the image)
// would defeat.
func usrIsDirectory(tree string) error {
	p := filepath.Join(tree, "usr")
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return ErrNoUsr
	case err != nil:
		return fmt.Errorf("checking /usr: %w", err)
	case fi.Mode()&fs.ModeSymlink != 0:
		target, _ := os.Readlink(p)
		return fmt.Errorf("%w: /usr is a symlink (to %q), not a directory", ErrNoUsr, target)
	case !fi.IsDir():
		return fmt.Errorf("%w: /usr is a %s, not a directory", ErrNoUsr, fi.Mode().Type())
	}
	return nil
}

// ErrBadTree is returned for an image whose tree bootstore refuses to deploy.
var ErrBadTree = errors.New("image cannot be deployed")

// StorageLink is where a deployment finds the unified store on a booted host
// (bootc's convention: the physical root is mounted at /sysroot).
const StorageLink = "/sysroot/ostree/bootc/storage"

const stagingPrefix = ".staging-"

// DeployOptions tune Deploy.
type DeployOptions struct {
	Stateroot string
	// CopyMode chooses how files are taken from the store.
	CopyMode fsclone.Mode
	// Kargs come first on the kernel command line, before kargs.d's.
	Kargs []string
	// Composefs writes the deployment as a composefs image over the
	// store's layers (see ComposefsImage) instead of a tree of files.
	Composefs bool
	// Verity (with Composefs) enables fs-verity on the store's files and
	// records their digests in the image.
	Verity bool
}

// Deployed is a deployment written to disk, with the boot entry that
// boots it.
type Deployed struct {
	Deployment sysroot.Deployment
	Entry      bls.Entry
	Build      *deploy.Result
	Clones     fsclone.Stats
	// Duration is the wall time of writing the tree and fixing it up.
	Duration time.Duration
}

// Deploy writes a new deployment of the image id from st. origin is
// completed with the kernel arguments; the caller fills the rest.
func Deploy(ctx context.Context, sr *sysroot.Sysroot, st *store.Store, id string, origin sysroot.Origin, opts DeployOptions) (*Deployed, error) {
	layers, err := st.LayerDirs(id)
	if err != nil {
		return nil, err
	}
	if err := st.ReleaseDriverMount(); err != nil {
		return nil, err
	}
	d := sysroot.Deployment{Stateroot: opts.Stateroot, ID: id, Serial: sr.NextSerial(opts.Stateroot, id), Origin: origin}
	deployDir := sr.DeployDir(opts.Stateroot)
	if err := os.MkdirAll(deployDir, 0o755); err != nil {
		return nil, err
	}
	if opts.Composefs {
		return deployComposefs(ctx, sr, st, id, layers, d, opts)
	}
	staging := filepath.Join(deployDir, stagingPrefix+d.Name())
	if err := removeStaging(staging); err != nil {
		return nil, err
	}
	start := time.Now()
	cloner := fsclone.New(opts.CopyMode)
	res, err := deploy.Build(ctx, layers, staging, deploy.Options{
		Cloner:          deployCloner{cloner},
		MutablePrefixes: []string{"/etc", "/var"},
		Workers:         runtime.NumCPU(),
	})
	if err != nil {
		return nil, fmt.Errorf("deploying image %s: %w", id, err)
	}
	out, err := finishDeployment(ctx, sr, staging, d, opts)
	if err != nil {
		os.RemoveAll(staging)
		return nil, fmt.Errorf("deploying image %s: %w", id, err)
	}
	out.Build, out.Clones, out.Duration = res, cloner.Stats(), time.Since(start)
	return out, nil
}

// deployCloner gives pkg/deploy the cloner with its directory-descriptor
// fast path for hardlinks.
type deployCloner struct{ *fsclone.Cloner }

func (c deployCloner) Clone(src, dst string, shared bool) error {
	_, err := c.Cloner.Clone(src, dst, shared)
	return err
}

// finishDeployment fixes up the staged tree, installs its kernel, writes the
// origin and renames the tree into place.
func finishDeployment(ctx context.Context, sr *sysroot.Sysroot, staging string, d sysroot.Deployment, opts DeployOptions) (*Deployed, error) {
	if err := usrIsDirectory(staging); err != nil {
		return nil, err
	}
	if err := etcDefaults(ctx, staging); err != nil {
		return nil, err
	}
	if err := seedVar(ctx, sr.VarDir(d.Stateroot), filepath.Join(staging, "var")); err != nil {
		return nil, err
	}
	if err := storageLink(staging); err != nil {
		return nil, err
	}
	if err := embedded.EnsureStore(staging); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadTree, err)
	}
	return commitDeployment(sr, staging, staging, d, opts)
}

// commitDeployment installs the kernel of tree (the deployment's view),
// writes the origin and renames staging into place.
func commitDeployment(sr *sysroot.Sysroot, tree, staging string, d sysroot.Deployment, opts DeployOptions) (*Deployed, error) {
	kver, modules, err := bls.FindKernel(tree)
	if err != nil {
		return nil, err
	}
	linux, initrd, err := bls.InstallKernel(sr.Root, d.Stateroot, modules)
	if err != nil {
		return nil, err
	}
	kargsD, err := bls.ReadKargsD(tree, runtime.GOARCH)
	if err != nil {
		return nil, err
	}
	d.Origin.Kargs = append(append([]string(nil), opts.Kargs...), kargsD...)
	pretty := prettyName(tree)
	if err := sr.WriteOrigin(d); err != nil {
		return nil, err
	}
	if err := os.Rename(staging, sr.DeploymentPath(d)); err != nil {
		os.Remove(sr.OriginPath(d))
		return nil, err
	}
	if err := sr.WriteBootLink(d); err != nil {
		return nil, err
	}
	entry := bls.Entry{
		Title:      fmt.Sprintf("%s (ostree:%s:%s)", pretty, d.Stateroot, kver),
		Linux:      linux,
		Initrd:     initrd,
		Options:    d.Origin.Kargs,
		Stateroot:  d.Stateroot,
		Deployment: d.KernelArg(),
	}
	return &Deployed{Deployment: d, Entry: entry}, nil
}

// etcDefaults keeps the image's /etc as /usr/etc (ostree's convention), so
// a later three-way merge knows the old defaults. It is a real copy.
func etcDefaults(ctx context.Context, tree string) error {
	etc := filepath.Join(tree, "etc")
	fi, err := os.Lstat(etc)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return os.Mkdir(filepath.Join(tree, "usr", "etc"), 0o755)
	case err != nil:
		return err
	case !fi.IsDir():
		// A symlinked /etc would make the copy below read whatever it
		// points at on this machine.
		return fmt.Errorf("%w: the image's /etc is a %s, not a directory", ErrBadTree, fi.Mode().Type())
	}
	usrEtc := filepath.Join(tree, "usr", "etc")
	if err := os.RemoveAll(usrEtc); err != nil {
		return err
	}
	// The built /etc is a plain tree (no whiteouts), so Build copies it
	// faithfully: owners, modes, xattrs, times, hardlinks.
	_, err = deploy.Build(ctx, []string{etc}, usrEtc, deploy.Options{MutablePrefixes: []string{"/"}, Workers: 1})
	if err != nil {
		return fmt.Errorf("keeping /etc as /usr/etc: %w", err)
	}
	return nil
}

// seedVar moves the image's /var into the stateroot's persistent /var when
// that is empty, and leaves the deployment's /var an empty mount point.
func seedVar(ctx context.Context, stateVar, treeVar string) error {
	entries, err := os.ReadDir(stateVar)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	fi, statErr := os.Lstat(treeVar)
	if statErr == nil && fi.IsDir() && len(entries) == 0 {
		os.Remove(stateVar)
		if err := os.MkdirAll(filepath.Dir(stateVar), 0o755); err != nil {
			return err
		}
		if err := os.Rename(treeVar, stateVar); err != nil {
			return fmt.Errorf("seeding %s: %w", stateVar, err)
		}
		return os.Mkdir(treeVar, fi.Mode().Perm())
	}
	if err := os.MkdirAll(stateVar, 0o755); err != nil {
		return err
	}
	if err := os.RemoveAll(treeVar); err != nil {
		return err
	}
	return os.Mkdir(treeVar, 0o755)
}

// storageLink points /usr/lib/bootc/storage at the unified store. An image
// whose /usr/lib or /usr/lib/bootc is not a real directory is refused: a
// symlink there would make this write outside the deployment, or change
// what the image ships.
func storageLink(tree string) error {
	dir := tree
	for _, name := range []string{"usr", "lib", "bootc"} {
		dir = filepath.Join(dir, name)
		fi, err := os.Lstat(dir)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
		case err != nil:
			return err
		case !fi.IsDir():
			rel, _ := filepath.Rel(tree, dir)
			return fmt.Errorf("%w: the image's /%s is a %s, not a directory", ErrBadTree, rel, fi.Mode().Type())
		}
	}
	link := filepath.Join(dir, "storage")
	if err := os.RemoveAll(link); err != nil {
		return err
	}
	return os.Symlink(StorageLink, link)
}

// prettyName reads PRETTY_NAME from the tree's os-release.
func prettyName(tree string) string {
	for _, p := range []string{"usr/lib/os-release", "etc/os-release"} {
		path, err := securejoin.SecureJoin(tree, p)
		if err != nil {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				return strings.Trim(v, `"'`)
			}
		}
	}
	return "Linux"
}

func removeStaging(staging string) error {
	if err := deploy.RemoveLeftovers(staging); err != nil {
		return err
	}
	return os.RemoveAll(staging)
}

// RemoveLeftovers deletes what crashed runs left in the stateroots:
// staging trees, and deployments or origins that no boot entry and no
// staged record reference. Call it under the sysroot lock.
func RemoveLeftovers(sr *sysroot.Sysroot, state *sysroot.State) error {
	paths, err := sr.UnusedDeploymentPaths(state)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range paths {
		errs = append(errs, os.RemoveAll(p))
	}
	return errors.Join(errs...)
}
