package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bootstore/bootstore/pkg/bls"
	"github.com/bootstore/bootstore/pkg/etcmerge"
	"github.com/bootstore/bootstore/pkg/sysroot"
)

// Finalized reports what FinalizeStaged did.
type Finalized struct {
	// Skipped says why nothing was done ("" when something was).
	Skipped    string
	Deployment sysroot.Deployment
	Etc        etcmerge.Stats
	// Resumed: an interrupted finalization had already made the staged
	// deployment the default; only its staged record was left to remove.
	Resumed bool
}

// FinalizeStaged makes the staged deployment the default boot entry, as at
// shutdown: the three-way /etc merge of the booted deployment's /usr/etc
// (old defaults) and /etc (the admin's) into the staged /etc (new
// defaults), then a new boot order of the staged and the booted deployment.
// Deployments dropped from the boot order are removed with their kernels.
//
// At shutdown an upgrade may still hold the lock; FinalizeStaged waits for
// it until ctx is done rather than lose the staged deployment.
func FinalizeStaged(ctx context.Context, sr *sysroot.Sysroot) (*Finalized, error) {
	lock, err := sr.Lock(ctx)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	state, err := sr.Load()
	if err != nil {
		return nil, err
	}
	switch {
	case state.StaleStaged != nil:
		// A finalization was interrupted after the boot entries were
		// swapped (the last step but the staged record's removal): the
		// /etc merge is done and must not run again, against itself.
		return &Finalized{Deployment: *state.StaleStaged, Resumed: true}, sr.ClearStaged()
	case state.Staged == nil:
		return &Finalized{Skipped: "no staged deployment"}, nil
	case state.StagedDownloadOnly:
		return &Finalized{Skipped: "the staged deployment is download-only (release it with upgrade --from-downloaded)"}, nil
	}
	staged := *state.Staged
	res := &Finalized{Deployment: staged}
	entries := []bls.Entry{*state.StagedEntry}
	if booted := state.BootedDeployment(); booted != nil {
		res.Etc, err = mergeEtc(ctx, sr, *booted, staged)
		if err != nil {
			return nil, fmt.Errorf("merging /etc into %s: %w", staged.Name(), err)
		}
		entries = append(entries, state.Entries[state.Booted])
	}
	if err := setBootOrder(sr, entries); err != nil {
		return nil, err
	}
	return res, sr.ClearStaged()
}

// mergeEtc merges the booted deployment's /etc changes into the staged
// one's. A composefs deployment's /usr/etc is in its image, mounted for it.
func mergeEtc(ctx context.Context, sr *sysroot.Sysroot, booted, staged sysroot.Deployment) (etcmerge.Stats, error) {
	usrEtc := filepath.Join(sr.DeploymentPath(booted), "usr", "etc")
	if booted.Origin.Composefs != "" {
		st, err := OpenStore(ctx, sr, nil)
		if err != nil {
			return etcmerge.Stats{}, err
		}
		defer st.Close()
		tree, release, err := DeploymentTree(sr, st, booted)
		if err != nil {
			return etcmerge.Stats{}, err
		}
		defer release()
		usrEtc = filepath.Join(tree, "usr", "etc")
	}
	return etcmerge.Merge(usrEtc, filepath.Join(sr.DeploymentPath(booted), "etc"), filepath.Join(sr.DeploymentPath(staged), "etc"))
}

// Rollback makes the rollback deployment the default boot entry, with the
// booted one after it, and drops a staged deployment.
func Rollback(sr *sysroot.Sysroot) (*sysroot.Deployment, error) {
	lock, state, err := lockAndLoad(sr)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	bootedIdx := state.Booted
	if bootedIdx < 0 {
		return nil, ErrNotBooted
	}
	rollbackIdx := -1
	for i := range state.Deployments {
		if i != bootedIdx {
			rollbackIdx = i
			break
		}
	}
	if rollbackIdx < 0 {
		return nil, ErrNoRollback
	}
	if staged := state.Staged; staged != nil {
		if err := sr.ClearStaged(); err != nil {
			return nil, err
		}
		os.RemoveAll(sr.DeploymentPath(*staged))
		os.Remove(sr.OriginPath(*staged))
	}
	entries := []bls.Entry{state.Entries[rollbackIdx], state.Entries[bootedIdx]}
	if err := setBootOrder(sr, entries); err != nil {
		return nil, err
	}
	return &state.Deployments[rollbackIdx], nil
}

// SimulateReboot records the deployment that boots next as the booted one,
// for a sysroot that is not the running system (tests, image builds).
func SimulateReboot(sr *sysroot.Sysroot) (*sysroot.Deployment, error) {
	lock, state, err := lockAndLoad(sr)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	if len(state.Deployments) == 0 {
		return nil, errors.New("no boot entry to boot")
	}
	return &state.Deployments[0], sr.MarkBooted(state.Deployments[0])
}

// setBootOrder writes the boot entries, then removes the deployments and
// kernels no entry and no staged record references any more.
func setBootOrder(sr *sysroot.Sysroot, entries []bls.Entry) error {
	if err := bls.Write(sr.Root, entries); err != nil {
		return fmt.Errorf("writing boot entries: %w", err)
	}
	state, err := sr.Load()
	if err != nil {
		return err
	}
	if err := RemoveLeftovers(sr, state); err != nil {
		return err
	}
	return bls.PruneKernels(sr.Root, entries)
}
