package gc

import (
	"context"
	"slices"

	"github.com/bootstore/bootstore/pkg/embedded"
	"github.com/bootstore/bootstore/pkg/store"
	"github.com/bootstore/bootstore/pkg/sysroot"
)

// ConsumerEmbedded is a kept deployment whose OS image embeds the image
// (`image embed`): the image lives in the deployment's tree, which gc
// removes only with the deployment.
const ConsumerEmbedded = "embedded"

// addEmbedded adds to uses the images that kept deployments embed, with
// role store.RoleEmbedded: an image also in the unified store gets the
// role and the consumer; one only embedded gets its own entry, its bytes
// (the sum of its layers) counted as unique to it.
func addEmbedded(sr *sysroot.Sysroot, st *store.Store, state *sysroot.State, uses []ImageUse) ([]ImageUse, error) {
	deployments := slices.Clone(state.Deployments)
	if state.Staged != nil {
		deployments = append(deployments, *state.Staged)
	}
	for _, d := range deployments {
		storePath := ""
		if info, err := st.Inspect(context.Background(), d.Origin.ImageID); err == nil {
			storePath = info.Labels[embedded.Label]
		}
		imgs, err := embedded.Images(sr.DeploymentPath(d), storePath)
		if err != nil {
			return nil, err
		}
		c := Consumer{Kind: ConsumerEmbedded, Name: d.Name()}
		for _, img := range imgs {
			i := slices.IndexFunc(uses, func(u ImageUse) bool { return u.ID == img.ID })
			if i < 0 {
				uses = append(uses, ImageUse{
					ImageInfo: store.ImageInfo{ID: img.ID, Names: img.Names, Digest: img.Digest.String(), Size: img.Size,
						Roles: []string{}, BoundBy: []string{}, BoundImages: []string{}, Layers: []store.LayerInfo{}},
					Consumers:   []Consumer{},
					UniqueBytes: img.Size,
				})
				i = len(uses) - 1
			}
			if !slices.Contains(uses[i].Roles, store.RoleEmbedded) {
				uses[i].Roles = append(uses[i].Roles, store.RoleEmbedded)
			}
			if !slices.Contains(uses[i].Consumers, c) {
				uses[i].Consumers = append(uses[i].Consumers, c)
			}
		}
	}
	return uses, nil
}

// embeddedIDs returns the IDs of the images deployment d's tree embeds.
func embeddedIDs(sr *sysroot.Sysroot, st *store.Store, d sysroot.Deployment) (map[string]bool, error) {
	storePath := ""
	if info, err := st.Inspect(context.Background(), d.Origin.ImageID); err == nil {
		storePath = info.Labels[embedded.Label]
	}
	imgs, err := embedded.Images(sr.DeploymentPath(d), storePath)
	if err != nil {
		return nil, err
	}
	ids := make(map[string]bool, len(imgs))
	for _, img := range imgs {
		ids[img.ID] = true
	}
	return ids, nil
}
