package gc

import (
	"context"
	"io"

	"github.com/bootstore/bootstore/pkg/store"
	"github.com/bootstore/bootstore/pkg/sysroot"
)

// Run takes the sysroot lock, opens the store, and marks and (unless
// dryRun) sweeps.
func Run(ctx context.Context, sr *sysroot.Sysroot, dryRun bool, warn io.Writer) (*Result, error) {
	lock, err := sr.TryLock()
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	if !store.Exists(sr.StorageRoot()) {
		return &Result{Plan: &Plan{Consumers: map[string][]Consumer{}, Images: []Victim{}, Layers: []string{}, Paths: []string{}}, DryRun: dryRun}, nil
	}
	st, err := store.Open(ctx, store.Options{GraphRoot: sr.StorageRoot(), RunRoot: sr.RunRoot(), TempDir: sr.TempDir(), Warn: warn})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return Collect(ctx, sr, st, dryRun)
}

// Collect marks and sweeps with the store open and the lock held by the
// caller (upgrade runs it after staging).
func Collect(ctx context.Context, sr *sysroot.Sysroot, st *store.Store, dryRun bool) (*Result, error) {
	plan, err := Mark(sr, st)
	if err != nil {
		return nil, err
	}
	if dryRun {
		return &Result{Plan: plan, DryRun: true}, nil
	}
	return Sweep(ctx, sr, st, plan)
}

// ImageUse is one image of Inventory.
type ImageUse struct {
	store.ImageInfo
	Consumers []Consumer `json:"consumers"`
	// UniqueBytes are in layers no other image uses; SharedBytes in layers
	// other images use too.
	UniqueBytes int64 `json:"uniqueBytes"`
	SharedBytes int64 `json:"sharedBytes"`
}

// Inventory lists the store's images with their consumers and their bytes
// unique to them versus shared with other images.
func Inventory(sr *sysroot.Sysroot, st *store.Store) ([]ImageUse, error) {
	state, err := sr.Load()
	if err != nil {
		return nil, err
	}
	roots, err := Roots(sr, st, state)
	if err != nil {
		return nil, err
	}
	infos, err := st.List()
	if err != nil {
		return nil, err
	}
	chains, sizes, err := st.LayerChains()
	if err != nil {
		return nil, err
	}
	refs := map[string]int{}
	for _, chain := range chains {
		for _, l := range chain {
			refs[l]++
		}
	}
	out := make([]ImageUse, len(infos))
	for i, info := range infos {
		u := ImageUse{ImageInfo: info, Consumers: roots[info.ID]}
		if u.Consumers == nil {
			u.Consumers = []Consumer{}
		}
		for _, l := range chains[info.ID] {
			if refs[l] == 1 {
				u.UniqueBytes += sizes[l]
			} else {
				u.SharedBytes += sizes[l]
			}
		}
		out[i] = u
	}
	return addEmbedded(sr, st, state, out)
}
