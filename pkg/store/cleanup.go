package store

import (
	"fmt"

	"go.podman.io/storage"
)

// layerIDs returns the IDs of every layer in the store.
func (s *Store) layerIDs() (map[string]bool, error) {
	layers, err := s.s.Layers()
	if err != nil {
		return nil, err
	}
	ids := make(map[string]bool, len(layers))
	for _, l := range layers {
		ids[l.ID] = true
	}
	return ids, nil
}

// usedLayers returns every layer an image or a container reaches, with its
// ancestors.
func (s *Store) usedLayers() (map[string]bool, error) {
	layers, err := s.s.Layers()
	if err != nil {
		return nil, err
	}
	parent := make(map[string]string, len(layers))
	for _, l := range layers {
		parent[l.ID] = l.Parent
	}
	used := map[string]bool{}
	mark := func(id string) {
		for id != "" && !used[id] {
			used[id] = true
			id = parent[id]
		}
	}
	images, err := s.s.Images()
	if err != nil {
		return nil, err
	}
	for _, img := range images {
		mark(img.TopLayer)
		for _, id := range img.MappedTopLayers {
			mark(id)
		}
	}
	containers, err := s.s.Containers()
	if err != nil {
		return nil, err
	}
	for _, c := range containers {
		mark(c.LayerID)
	}
	return used, nil
}

// removeNewOrphanLayers deletes the layers a failed pull committed: those
// not in before that no image or container uses. Layers that existed before
// are never touched, whoever uses them.
func (s *Store) removeNewOrphanLayers(before map[string]bool) error {
	if before == nil {
		return nil
	}
	used, err := s.usedLayers()
	if err != nil {
		return err
	}
	layers, err := s.s.Layers()
	if err != nil {
		return err
	}
	var orphans []storage.Layer
	for _, l := range layers {
		if !before[l.ID] && !used[l.ID] {
			orphans = append(orphans, l)
		}
	}
	return s.deleteLayersChildrenFirst(orphans)
}

// deleteLayersChildrenFirst deletes layers so that no layer is deleted while
// another one in the set still has it as parent.
func (s *Store) deleteLayersChildrenFirst(layers []storage.Layer) error {
	pending := make(map[string]storage.Layer, len(layers))
	for _, l := range layers {
		pending[l.ID] = l
	}
	for len(pending) > 0 {
		isParent := map[string]bool{}
		for _, l := range pending {
			isParent[l.Parent] = true
		}
		progressed := false
		for id := range pending {
			if isParent[id] {
				continue
			}
			if err := s.s.DeleteLayer(id); err != nil {
				return fmt.Errorf("removing layer %s: %w", id, err)
			}
			delete(pending, id)
			progressed = true
		}
		if !progressed {
			return fmt.Errorf("removing layers: parent cycle among %d layers", len(pending))
		}
	}
	return nil
}

// removeImage deletes an image a pull just made and the layers it added.
func (s *Store) removeImage(id string, before map[string]bool) error {
	if _, err := s.s.DeleteImage(id, true); err != nil {
		return fmt.Errorf("removing image %s: %w", id, err)
	}
	return s.removeNewOrphanLayers(before)
}
