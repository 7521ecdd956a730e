// Package gc frees what no consumer of the unified store uses any more.
//
// Lifecycle: Mark finds every root by image ID — the images of kept
// deployments (staged, booted, rollback, and any other boot entry) with
// the bound images recorded when they were deployed, the images of
// containers in the store, and images the user pinned — and plans the
// removal of everything else: unreferenced images, layers no image or
// container reaches, deployments and kernels no boot entry uses, and the
// leftovers of crashed runs. Sweep carries the plan out through the storage
// library (never by running podman: DESIGN.md invariant 7) and measures the
// bytes freed with statfs. A dry run stops after Mark.
//
// Names are never trusted: a tag that moved or a name that was reassigned
// does not change which image IDs are roots.
package gc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"go.podman.io/storage"
	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/pkg/bls"
	"github.com/bootstore/bootstore/pkg/store"
	"github.com/bootstore/bootstore/pkg/sysroot"
)

// Consumer kinds.
const (
	ConsumerDeployment = "deployment" // an OS deployment's image
	ConsumerBound      = "bound"      // a bound image of a deployment
	ConsumerContainer  = "container"  // a container in the store
	ConsumerPin        = "pin"        // pinned with `image pin`
)

// Consumer is one reason an image is kept.
type Consumer struct {
	Kind string `json:"kind"`
	// Name is the deployment (<id>.<serial>), the container's name or ID,
	// or the pinned name.
	Name string `json:"name"`
}

// Victim is an image the plan removes.
type Victim struct {
	ID    string   `json:"id"`
	Names []string `json:"names"`
	Size  int64    `json:"size"`
}

// Plan is what Mark found.
type Plan struct {
	// Consumers maps every rooted image ID to why it is kept.
	Consumers map[string][]Consumer `json:"consumers"`
	Images    []Victim              `json:"images"`
	// Layers are layers no image or container reaches (after the image
	// removals, more may follow; Sweep removes those too).
	Layers []string `json:"layers"`
	// Paths are deployments, kernels and leftovers to delete.
	Paths []string `json:"paths"`
}

// Result is what Sweep did.
type Result struct {
	Plan          *Plan `json:"plan"`
	DryRun        bool  `json:"dryRun"`
	ImagesRemoved int   `json:"imagesRemoved"`
	LayersRemoved int   `json:"layersRemoved"`
	PathsRemoved  int   `json:"pathsRemoved"`
	// Freed is free space after minus before on the store's filesystem.
	Freed int64 `json:"freedBytes"`
}

// Mark finds the roots and plans the removal of everything else.
func Mark(sr *sysroot.Sysroot, st *store.Store) (*Plan, error) {
	state, err := sr.Load()
	if err != nil {
		return nil, err
	}
	consumers, err := Roots(sr, st, state)
	if err != nil {
		return nil, err
	}
	plan := &Plan{Consumers: consumers, Images: []Victim{}, Layers: []string{}, Paths: []string{}}
	images, err := st.Storage().Images()
	if err != nil {
		return nil, err
	}
	embeddedIn := func(d sysroot.Deployment) (map[string]bool, error) { return embeddedIDs(sr, st, d) }
	if err := checkRootsPresent(sr, st.Storage().GraphDriverName(), state, images, embeddedIn); err != nil {
		return nil, err
	}
	for _, img := range images {
		if _, kept := consumers[img.ID]; kept {
			continue
		}
		size, _ := st.Storage().ImageSize(img.ID)
		plan.Images = append(plan.Images, Victim{ID: img.ID, Names: append([]string{}, img.Names...), Size: size})
	}
	if plan.Layers, err = st.OrphanLayers(); err != nil {
		return nil, err
	}
	if plan.Paths, err = unusedPaths(sr, state); err != nil {
		return nil, err
	}
	return plan, nil
}

// ErrStoreDamaged is returned by Mark when an image a kept deployment was
// made from is not in the store: the store's metadata was lost or damaged
// (an emptied overlay-images/images.json reads as "no images"), and
// sweeping would remove the layers of every image it no longer lists.
var ErrStoreDamaged = errors.New("the unified store lacks images that deployments use")

// checkRootsPresent returns ErrStoreDamaged naming the first deployment
// whose image (unified storage) or bound image is missing from images. A
// bound image the deployment's OS image embeds (embeddedIn) lives in the
// deployment, not in the store.
func checkRootsPresent(sr *sysroot.Sysroot, driver string, state *sysroot.State, images []storage.Image,
	embeddedIn func(sysroot.Deployment) (map[string]bool, error)) error {
	have := make(map[string]bool, len(images))
	for _, img := range images {
		have[img.ID] = true
	}
	deployments := slices.Clone(state.Deployments)
	if state.Staged != nil {
		deployments = append(deployments, *state.Staged)
	}
	for _, d := range deployments {
		ids := slices.Clone(d.Origin.BoundImages)
		if d.Origin.Storage == sysroot.StorageUnified {
			ids = append(ids, d.Origin.ImageID)
		}
		var emb map[string]bool
		for _, id := range ids {
			if id == "" || have[id] {
				continue
			}
			if emb == nil {
				var err error
				if emb, err = embeddedIn(d); err != nil {
					return fmt.Errorf("reading the embedded store of deployment %s: %w", d.Name(), err)
				}
			}
			if !emb[id] {
				index := filepath.Join(sr.StorageRoot(), driver+"-images", "images.json")
				return fmt.Errorf("%w: deployment %s uses image %.12s, which %s does not list; refusing to collect anything. "+
					"Restore %s from a backup, or pull the deployment's images again (bootstore image pull), then rerun gc",
					ErrStoreDamaged, d.Name(), id, sr.StorageRoot(), index)
			}
		}
	}
	return nil
}

// Roots returns every image ID a consumer uses, with its consumers.
func Roots(sr *sysroot.Sysroot, st *store.Store, state *sysroot.State) (map[string][]Consumer, error) {
	roots := map[string][]Consumer{}
	add := func(id string, c Consumer) {
		if id != "" && !slices.Contains(roots[id], c) {
			roots[id] = append(roots[id], c)
		}
	}
	deployments := slices.Clone(state.Deployments)
	if state.Staged != nil {
		deployments = append(deployments, *state.Staged)
	}
	for _, d := range deployments {
		add(d.Origin.ImageID, Consumer{Kind: ConsumerDeployment, Name: d.Name()})
		for _, id := range d.Origin.BoundImages {
			add(id, Consumer{Kind: ConsumerBound, Name: d.Name()})
		}
	}
	containers, err := st.Storage().Containers()
	if err != nil {
		return nil, err
	}
	for _, c := range containers {
		name := c.ID
		if len(c.Names) > 0 {
			name = c.Names[0]
		}
		add(c.ImageID, Consumer{Kind: ConsumerContainer, Name: name})
	}
	pins, err := ReadPins(sr)
	if err != nil {
		return nil, err
	}
	for _, p := range pins {
		add(p.ID, Consumer{Kind: ConsumerPin, Name: p.Name})
	}
	return roots, nil
}

// unusedPaths lists deployments no boot entry or staged record uses, boot
// kernels no entry uses, and the leftovers of crashed runs.
func unusedPaths(sr *sysroot.Sysroot, state *sysroot.State) ([]string, error) {
	paths, err := sr.UnusedDeploymentPaths(state)
	if err != nil {
		return nil, err
	}
	kernels, err := bls.UnusedKernels(sr.Root, stagedEntry(state))
	if err != nil {
		return nil, err
	}
	paths = append(paths, kernels...)
	for _, pattern := range []string{".split-*", ".storage.tmp*"} {
		m, _ := filepath.Glob(filepath.Join(filepath.Dir(sr.StorageRoot()), pattern))
		paths = append(paths, m...)
	}
	tmp, _ := os.ReadDir(sr.TempDir())
	for _, e := range tmp {
		paths = append(paths, filepath.Join(sr.TempDir(), e.Name()))
	}
	sort.Strings(paths)
	return paths, nil
}

func stagedEntry(state *sysroot.State) []bls.Entry {
	if state.StagedEntry == nil {
		return nil
	}
	return []bls.Entry{*state.StagedEntry}
}

// Sweep carries a plan out: images first (with the layers only they used),
// then orphan layers, then paths. It re-checks every image against the
// roots at removal time.
func Sweep(ctx context.Context, sr *sysroot.Sysroot, st *store.Store, plan *Plan) (*Result, error) {
	res := &Result{Plan: plan}
	before, err := freeBytes(sr.StorageRoot())
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, v := range plan.Images {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if _, rooted := plan.Consumers[v.ID]; rooted {
			continue
		}
		if err := st.RemoveImage(v.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		res.ImagesRemoved++
	}
	n, err := st.RemoveOrphanLayers()
	res.LayersRemoved += n
	if err != nil {
		errs = append(errs, err)
	}
	for _, p := range plan.Paths {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", p, err))
			continue
		}
		res.PathsRemoved++
	}
	after, err := freeBytes(sr.StorageRoot())
	if err != nil {
		return nil, err
	}
	res.Freed = after - before
	return res, errors.Join(errs...)
}

func freeBytes(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return int64(st.Bfree) * int64(st.Bsize), nil
}
