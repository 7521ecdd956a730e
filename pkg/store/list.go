package store

import (
	"sort"
	"time"
)

// Roles an image plays on the host.
const (
	RoleHost  = "host"  // pulled as an OS image
	RoleBound = "bound" // a logically bound image of a host image
)

// ImageInfo is one image of List.
type ImageInfo struct {
	ID      string    `json:"id"`
	Names   []string  `json:"names"`
	Digest  string    `json:"digest"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
	// Roles holds RoleHost and/or RoleBound; empty for other images.
	Roles []string `json:"roles"`
	// BoundBy lists the host images (by ID) whose pull recorded this image
	// as one of their bound images.
	BoundBy []string `json:"boundBy"`
	// BoundImages lists, for a host image, the image IDs it binds.
	BoundImages []string `json:"boundImages"`
	// Layers are the image's layers, base first, each saying whether it was
	// pulled partially (partial.go).
	Layers []LayerInfo `json:"layers"`
}

// List returns every image in the store, newest first, with the roles
// recorded at pull time.
func (s *Store) List() ([]ImageInfo, error) {
	imgs, err := s.s.Images()
	if err != nil {
		return nil, err
	}
	byLayerID, err := s.layersByID()
	if err != nil {
		return nil, err
	}
	infos := make([]ImageInfo, 0, len(imgs))
	index := map[string]int{}
	for _, img := range imgs {
		size, err := s.s.ImageSize(img.ID)
		if err != nil {
			size = -1
		}
		index[img.ID] = len(infos)
		infos = append(infos, ImageInfo{
			ID: img.ID, Names: nonNil(img.Names), Digest: img.Digest.String(), Size: size, Created: img.Created,
			Roles: []string{}, BoundBy: []string{}, BoundImages: []string{},
			Layers: layerChain(byLayerID, img.TopLayer),
		})
	}
	for i := range infos {
		rec, ok, err := s.HostRecordOf(infos[i].ID)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		infos[i].Roles = append(infos[i].Roles, RoleHost)
		for _, b := range rec.BoundImages {
			infos[i].BoundImages = append(infos[i].BoundImages, b.ID)
			if j, present := index[b.ID]; present {
				if len(infos[j].BoundBy) == 0 {
					infos[j].Roles = append(infos[j].Roles, RoleBound)
				}
				infos[j].BoundBy = append(infos[j].BoundBy, infos[i].ID)
			}
		}
	}
	sort.SliceStable(infos, func(a, b int) bool { return infos[a].Created.After(infos[b].Created) })
	return infos, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
