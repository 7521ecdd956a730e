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
	"github.com/bootstore/bootstore/pkg/gc"
	"github.com/bootstore/bootstore/pkg/store"
	"github.com/bootstore/bootstore/pkg/sysroot"
)

// Typed errors of the lifecycle commands.
var (
	ErrNotBooted   = errors.New("no booted deployment")
	ErrSameContent = errors.New("the image is the booted image")
	ErrNoRollback  = errors.New("no rollback deployment")
	ErrNotStaged   = errors.New("no download-only staged deployment")
)

// StageOptions tune Upgrade and Switch.
type StageOptions struct {
	// Check only reads manifest and config and records a cached update.
	Check bool
	// DownloadOnly stages a deployment that finalization skips until
	// FromDownloaded releases it.
	DownloadOnly bool
	// FromDownloaded releases a download-only staged deployment.
	FromDownloaded bool
	// ImageSet, for Upgrade, reads the new image and its bound images
	// from an image set (image save) of the image the host tracks,
	// instead of from the registry.
	ImageSet types.ImageReference
	CopyMode fsclone.Mode
	Pull     store.PullOptions
	Warn     io.Writer
}

// StageResult reports what Upgrade or Switch did.
type StageResult struct {
	// UpToDate: the source serves what is booted (or already staged).
	UpToDate bool
	// Update is set by a check that found a newer image.
	Update *sysroot.Origin
	Staged *Deployed
	Host   *store.Pulled
	Bound  []*store.Pulled
	// Released: a download-only deployment was released.
	Released bool
	// GC is the collection run after staging.
	GC *gc.Result
}

// SourceOf turns a deployment's origin back into an image reference.
func SourceOf(o sysroot.Origin) (types.ImageReference, error) {
	if o.Transport == "docker" {
		return store.ParseReference("docker://" + o.Image)
	}
	return store.ParseReference(o.Transport + ":" + o.Image)
}

// Upgrade fetches what the booted deployment's origin serves now and stages
// it, bound images first: a failed bound image stages nothing.
func Upgrade(ctx context.Context, sr *sysroot.Sysroot, opts StageOptions) (*StageResult, error) {
	return stage(ctx, sr, nil, opts)
}

// Switch stages src in place of the booted image; an image with the booted
// image's content is refused.
func Switch(ctx context.Context, sr *sysroot.Sysroot, src types.ImageReference, opts StageOptions) (*StageResult, error) {
	return stage(ctx, sr, src, opts)
}

func stage(ctx context.Context, sr *sysroot.Sysroot, src types.ImageReference, opts StageOptions) (*StageResult, error) {
	lock, state, booted, err := lockBooted(sr)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	if opts.FromDownloaded {
		return release(sr, state)
	}
	switching := src != nil
	var from *source
	switch {
	case switching:
		from, err = openSource(ctx, sr, src)
	case opts.ImageSet != nil:
		from, err = openUpgradeSet(ctx, sr, opts.ImageSet, booted)
	default:
		from = &source{}
		from.ref, err = SourceOf(booted.Origin)
	}
	if err != nil {
		return nil, err
	}
	defer from.Close()
	if opts.Check {
		return check(ctx, sr, state, from, opts)
	}
	if err := RemoveLeftovers(sr, state); err != nil {
		return nil, err
	}
	unified, err := OpenStore(ctx, sr, opts.Warn)
	if err != nil {
		return nil, err
	}
	defer unified.Close()

	var res *StageResult
	if booted.Origin.Storage == sysroot.StorageUnified || unified.HasImage(booted.ID) {
		res, err = stageUnified(ctx, sr, unified, state, from, switching, opts)
	} else {
		res, err = stageSplit(ctx, sr, unified, state, from, switching, opts)
	}
	if err != nil || res.Staged == nil {
		return res, err
	}
	// Collect after every staging: what the replaced staged deployment or
	// the previous bound images held is free now.
	if res.GC, err = gc.Collect(ctx, sr, unified, false); err != nil {
		return res, fmt.Errorf("staged %s, but garbage collection failed: %w", res.Staged.Deployment.Name(), err)
	}
	return res, nil
}

// check records the newer image's metadata without fetching a layer.
func check(ctx context.Context, sr *sysroot.Sysroot, state *sysroot.State, from *source, opts StageOptions) (*StageResult, error) {
	info, err := store.RemoteInfo(ctx, opts.Pull.System, from.ref)
	if err != nil {
		return nil, err
	}
	if from.set != nil {
		info.Digest = from.set.Host.SourceDigest
	}
	if current(state, info.Digest.String(), "") {
		return &StageResult{UpToDate: true}, sr.WriteCachedUpdate(nil)
	}
	src := from.known()
	update := &sysroot.Origin{
		Transport: src.Transport().Name(), Image: imageWithinTransport(src), ManifestDigest: info.Digest.String(),
		Version: info.Labels["org.opencontainers.image.version"], Architecture: info.Architecture, Timestamp: info.Created,
	}
	return &StageResult{Update: update}, sr.WriteCachedUpdate(update)
}

// current reports whether digest (or image ID) is what is booted or staged.
func current(state *sysroot.State, digest, id string) bool {
	for _, d := range []*sysroot.Deployment{state.BootedDeployment(), state.Staged} {
		if d != nil && (d.Origin.ManifestDigest == digest || (id != "" && d.ID == id)) {
			return true
		}
	}
	return false
}

func stageUnified(ctx context.Context, sr *sysroot.Sysroot, st *store.Store, state *sysroot.State, src *source, switching bool, opts StageOptions) (*StageResult, error) {
	booted := state.BootedDeployment()
	pulled, err := st.PullHost(ctx, src.ref, src.pullOptions(opts.Pull, false))
	if err != nil {
		return nil, err
	}
	res := &StageResult{Host: pulled.Host, Bound: pulled.Bound}
	if switching && pulled.Host.ID == booted.ID {
		return nil, fmt.Errorf("%w: %s has the content of the booted deployment %s", ErrSameContent, pulled.Host.Ref, booted.Name())
	}
	if current(state, pulled.Host.Digest.String(), pulled.Host.ID) {
		res.UpToDate = true
		return res, sr.WriteCachedUpdate(nil)
	}
	origin, err := src.origin(ctx, st, pulled.Host, pulled.Bound, sysroot.StorageUnified, opts.Pull.System)
	if err != nil {
		return nil, err
	}
	kargs, err := userKargs(sr, st, booted)
	if err != nil {
		return nil, err
	}
	// A composefs host stays one: the choice is the booted deployment's.
	dep, err := Deploy(ctx, sr, st, pulled.Host.ID, origin, DeployOptions{
		Stateroot: booted.Stateroot, CopyMode: opts.CopyMode, Kargs: kargs,
		Composefs: booted.Origin.Composefs != "", Verity: booted.Origin.ComposefsVerity,
	})
	if err != nil {
		return nil, fmt.Errorf("deploying %s: %w", pulled.Host.Ref, err)
	}
	res.Staged = dep
	return res, commitStaged(sr, state, dep, opts.DownloadOnly)
}

func stageSplit(ctx context.Context, sr *sysroot.Sysroot, unified *store.Store, state *sysroot.State, src *source, switching bool, opts StageOptions) (*StageResult, error) {
	booted := state.BootedDeployment()
	digest, err := store.RemoteDigest(ctx, opts.Pull.System, src.ref)
	if src.set != nil {
		digest = src.set.Host.SourceDigest
	}
	if err != nil {
		return nil, err
	}
	if current(state, digest.String(), "") {
		return &StageResult{UpToDate: true}, sr.WriteCachedUpdate(nil)
	}
	kargs, err := userKargs(sr, unified, booted)
	if err != nil {
		return nil, err
	}
	sp, err := deploySplit(ctx, sr, unified, src, booted.Stateroot, kargs, false, opts.Pull, opts.Warn, func(host *store.Pulled) error {
		if switching && host.ID == booted.ID {
			return fmt.Errorf("%w: %s has the content of the booted deployment %s", ErrSameContent, host.Ref, booted.Name())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res := &StageResult{Staged: sp.Deployed, Host: sp.Host, Bound: sp.Bound}
	return res, commitStaged(sr, state, sp.Deployed, opts.DownloadOnly)
}

// commitStaged replaces any previously staged deployment with dep.
func commitStaged(sr *sysroot.Sysroot, state *sysroot.State, dep *Deployed, downloadOnly bool) error {
	if err := sr.WriteStaged(dep.Deployment, dep.Entry, downloadOnly); err != nil {
		return err
	}
	if err := sr.WriteCachedUpdate(nil); err != nil {
		return err
	}
	if old := state.Staged; old != nil && old.Name() != dep.Deployment.Name() {
		os.RemoveAll(sr.DeploymentPath(*old))
		os.Remove(sr.OriginPath(*old))
	}
	return nil
}

func release(sr *sysroot.Sysroot, state *sysroot.State) (*StageResult, error) {
	if state.Staged == nil || !state.StagedDownloadOnly {
		return nil, ErrNotStaged
	}
	if err := sr.WriteStaged(*state.Staged, *state.StagedEntry, false); err != nil {
		return nil, err
	}
	return &StageResult{Released: true}, nil
}

// userKargs are the booted deployment's kernel arguments without the ones
// its image's kargs.d added: the new image's kargs.d replaces those.
func userKargs(sr *sysroot.Sysroot, st *store.Store, d *sysroot.Deployment) ([]string, error) {
	tree, release, err := DeploymentTree(sr, st, *d)
	if err != nil {
		return nil, err
	}
	fromImage, err := bls.ReadKargsD(tree, "")
	release()
	if err != nil {
		return nil, fmt.Errorf("deployment %s: %w", d.Name(), err)
	}
	kargs := slices.Clone(d.Origin.Kargs)
	for _, k := range fromImage {
		if i := slices.Index(kargs, k); i >= 0 {
			kargs = slices.Delete(kargs, i, i+1)
		}
	}
	return kargs, nil
}

// splitDeployed is the result of deploySplit.
type splitDeployed struct {
	Deployed *Deployed
	Host     *store.Pulled
	Bound    []*store.Pulled
}

// deploySplit pulls src into a temporary store and its bound images into
// the unified store, only then copies src into a new deployment, and drops
// the temporary store. check vets the pulled image before anything else.
func deploySplit(ctx context.Context, sr *sysroot.Sysroot, unified *store.Store, src *source, stateroot string, kargs []string,
	skipBound bool, pull store.PullOptions, warn io.Writer, check func(*store.Pulled) error) (*splitDeployed, error) {
	tmpRoot, err := os.MkdirTemp(filepath.Dir(sr.StorageRoot()), ".split-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmpRoot)
	tmp, err := store.Open(ctx, store.Options{
		GraphRoot: filepath.Join(tmpRoot, "storage"), RunRoot: filepath.Join(tmpRoot, "run"),
		TempDir: sr.TempDir(), Warn: warn,
	})
	if err != nil {
		return nil, err
	}
	defer tmp.Close()
	hostPull := src.pullOptions(pull, skipBound)
	host, err := tmp.PullImage(ctx, src.ref, hostPull.PullOptions)
	if err != nil {
		return nil, err
	}
	if check != nil {
		if err := check(host); err != nil {
			return nil, err
		}
	}
	res := &splitDeployed{Host: host}
	if !skipBound {
		bound, err := tmp.DiscoverBound(host.ID)
		if err != nil {
			return nil, fmt.Errorf("reading the bound images of %s: %w", host.Ref, err)
		}
		if hostPull.Embedded, err = tmp.EmbeddedImages(ctx, host.ID); err != nil {
			return nil, err
		}
		if res.Bound, err = unified.PullBound(ctx, host.Ref, bound, hostPull); err != nil {
			return nil, err
		}
	}
	origin, err := src.origin(ctx, tmp, host, res.Bound, sysroot.StorageSplit, pull.System)
	if err != nil {
		return nil, err
	}
	if res.Deployed, err = Deploy(ctx, sr, tmp, host.ID, origin, DeployOptions{Stateroot: stateroot, CopyMode: fsclone.Copy, Kargs: kargs}); err != nil {
		return nil, fmt.Errorf("deploying %s: %w", host.Ref, err)
	}
	return res, tmp.Close()
}
