package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"go.podman.io/image/v5/types"

	"github.com/bootstore/bootstore/pkg/bls"
	"github.com/bootstore/bootstore/pkg/fsclone"
	"github.com/bootstore/bootstore/pkg/store"
	"github.com/bootstore/bootstore/pkg/sysroot"
)

// ErrNotEmpty is returned when installing into a root that holds files.
var ErrNotEmpty = errors.New("target root is not empty")

// InstallOptions are install to-filesystem's settings.
type InstallOptions struct {
	// Source is the OS image.
	Source types.ImageReference
	// Unified keeps the OS image in the unified store and deploys from its
	// layers; otherwise the image is pulled into a temporary store, copied
	// into the deployment and dropped (a "split" host, as bootc's today).
	Unified   bool
	Stateroot string
	Kargs     []string
	// SkipBoundImages leaves the bound images for later.
	SkipBoundImages bool
	// Wipe empties a non-empty root first (--replace=wipe).
	Wipe     bool
	CopyMode fsclone.Mode
	// Composefs deploys a composefs image (needs Unified); Verity adds
	// fs-verity digests of the store's files to it.
	Composefs, Verity bool
	Pull              store.PullOptions
	// Warn receives warnings such as the vfs fallback.
	Warn io.Writer
}

// Installed reports what Install did.
type Installed struct {
	Deployed *Deployed
	Host     *store.Pulled
	Bound    []*store.Pulled
}

// ownDirs are what an interrupted install leaves in the root; a root holding
// only these and no boot entry is resumed, not refused.
var ownDirs = []string{"ostree", "boot", "run", "lost+found"}

// Install lays root out as a new host booting opts.Source.
func Install(ctx context.Context, root string, opts InstallOptions) (*Installed, error) {
	sr, err := sysroot.New(root)
	if err != nil {
		return nil, err
	}
	if opts.Composefs && !opts.Unified {
		return nil, ErrComposefsNeedsUnified
	}
	if err := prepareRoot(sr, opts.Wipe); err != nil {
		return nil, err
	}
	lock, err := sr.TryLock()
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	if err := sr.CleanTemp(); err != nil {
		return nil, err
	}
	if err := RemoveLeftovers(sr, &sysroot.State{}); err != nil {
		return nil, err
	}
	if opts.Stateroot == "" {
		opts.Stateroot = "default"
	}
	unified, err := OpenStore(ctx, sr, opts.Warn)
	if err != nil {
		return nil, err
	}
	defer unified.Close()

	src, err := openSource(ctx, sr, opts.Source)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	var res *Installed
	if opts.Unified {
		res, err = installUnified(ctx, sr, unified, src, opts)
	} else {
		res, err = installSplit(ctx, sr, unified, src, opts)
	}
	if err != nil {
		return nil, err
	}
	if err := bls.Write(sr.Root, []bls.Entry{res.Deployed.Entry}); err != nil {
		return nil, fmt.Errorf("writing the boot entry: %w", err)
	}
	return res, nil
}

// OpenStore opens (creating) the sysroot's unified store.
func OpenStore(ctx context.Context, sr *sysroot.Sysroot, warn io.Writer) (*store.Store, error) {
	return store.Open(ctx, store.Options{GraphRoot: sr.StorageRoot(), RunRoot: sr.RunRoot(), TempDir: sr.TempDir(), Warn: warn})
}

// prepareRoot refuses a root with foreign files unless wipe, and accepts
// the leftovers of an interrupted install (our directories, no boot entry).
func prepareRoot(sr *sysroot.Sysroot, wipe bool) error {
	entries, err := os.ReadDir(sr.Root)
	if err != nil {
		return fmt.Errorf("reading target root %s: %w", sr.Root, err)
	}
	var foreign []string
	for _, e := range entries {
		if !slices.Contains(ownDirs, e.Name()) {
			foreign = append(foreign, e.Name())
		}
	}
	installed, _ := bls.Read(sr.Root)
	if len(foreign) == 0 && len(installed) == 0 {
		return nil
	}
	if !wipe {
		what := fmt.Sprintf("%d boot entries", len(installed))
		if len(foreign) > 0 {
			what = fmt.Sprintf("%q", foreign[0])
			if len(foreign) > 1 {
				what += fmt.Sprintf(" and %d more", len(foreign)-1)
			}
		}
		return fmt.Errorf("%w: %s holds %s (use --replace=wipe to erase it)", ErrNotEmpty, sr.Root, what)
	}
	for _, e := range entries {
		if e.Name() == "lost+found" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(sr.Root, e.Name())); err != nil {
			return fmt.Errorf("wiping %s: %w", sr.Root, err)
		}
	}
	return nil
}

func installUnified(ctx context.Context, sr *sysroot.Sysroot, st *store.Store, src *source, opts InstallOptions) (*Installed, error) {
	pulled, err := st.PullHost(ctx, src.ref, src.pullOptions(opts.Pull, opts.SkipBoundImages))
	if err != nil {
		return nil, err
	}
	origin, err := src.origin(ctx, st, pulled.Host, pulled.Bound, sysroot.StorageUnified, opts.Pull.System)
	if err != nil {
		return nil, err
	}
	dep, err := Deploy(ctx, sr, st, pulled.Host.ID, origin, DeployOptions{
		Stateroot: opts.Stateroot, CopyMode: opts.CopyMode, Kargs: opts.Kargs, Composefs: opts.Composefs, Verity: opts.Verity,
	})
	if err != nil {
		return nil, fmt.Errorf("installing %s: %w", pulled.Host.Ref, err)
	}
	return &Installed{Deployed: dep, Host: pulled.Host, Bound: pulled.Bound}, nil
}

// installSplit deploys a split host: the OS image is copied into the
// deployment and not kept; only its bound images enter the unified store.
func installSplit(ctx context.Context, sr *sysroot.Sysroot, unified *store.Store, src *source, opts InstallOptions) (*Installed, error) {
	sp, err := deploySplit(ctx, sr, unified, src, opts.Stateroot, opts.Kargs, opts.SkipBoundImages, opts.Pull, opts.Warn, nil)
	if err != nil {
		return nil, fmt.Errorf("installing %s: %w", store.RefName(opts.Source), err)
	}
	return &Installed{Deployed: sp.Deployed, Host: sp.Host, Bound: sp.Bound}, nil
}

// NewOrigin describes a pulled image for a deployment's origin file.
func NewOrigin(ctx context.Context, st *store.Store, src types.ImageReference, host *store.Pulled, bound []*store.Pulled, storage string, sys *types.SystemContext) (sysroot.Origin, error) {
	info, err := st.Inspect(ctx, host.ID)
	if err != nil {
		return sysroot.Origin{}, err
	}
	o := sysroot.Origin{
		Transport:      src.Transport().Name(),
		Image:          imageWithinTransport(src),
		Signed:         store.PolicyVerifies(sys, src),
		ImageID:        host.ID,
		ManifestDigest: host.Digest.String(),
		BoundImages:    pulledIDs(bound),
		Storage:        storage,
		Version:        info.Labels["org.opencontainers.image.version"],
		Architecture:   info.Architecture,
	}
	if info.Created != nil {
		o.Timestamp = info.Created.UTC().Format("2006-01-02T15:04:05Z")
	}
	return o, nil
}

func imageWithinTransport(ref types.ImageReference) string {
	if named := ref.DockerReference(); named != nil && store.IsRegistry(ref) {
		return named.String()
	}
	return ref.StringWithinTransport()
}

func pulledIDs(ps []*store.Pulled) []string {
	ids := make([]string, len(ps))
	for i, p := range ps {
		ids[i] = p.ID
	}
	return ids
}
