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
	orphans, err := s.orphanLayers(func(id string) bool { return before[id] })
	if err != nil {
		return err
	}
	return s.deleteLayersChildrenFirst(orphans)
}

// orphanLayers returns the layers no image or container reaches, except
// those keep accepts.
func (s *Store) orphanLayers(keep func(id string) bool) ([]storage.Layer, error) {
	used, err := s.usedLayers()
	if err != nil {
		return nil, err
	}
	layers, err := s.s.Layers()
	if err != nil {
		return nil, err
	}
	var orphans []storage.Layer
	for _, l := range layers {
		if !used[l.ID] && (keep == nil || !keep(l.ID)) {
			orphans = append(orphans, l)
		}
	}
	return orphans, nil
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
	if err := s.RemoveImage(id); err != nil {
		return err
	}
	return s.removeNewOrphanLayers(before)
}

// OrphanLayers returns the IDs of the layers no image or container reaches.
func (s *Store) OrphanLayers() ([]string, error) {
	orphans, err := s.orphanLayers(nil)
	ids := make([]string, len(orphans))
	for i, l := range orphans {
		ids[i] = l.ID
	}
	return ids, err
}

// RemoveOrphanLayers deletes every layer no image or container reaches and
// returns how many went.
func (s *Store) RemoveOrphanLayers() (int, error) {
	orphans, err := s.orphanLayers(nil)
	if err != nil {
		return 0, err
	}
	return len(orphans), s.deleteLayersChildrenFirst(orphans)
}

// RemoveImage deletes an image and the layers only it used, through the
// storage library.
func (s *Store) RemoveImage(id string) error {
	if _, err := s.s.DeleteImage(id, true); err != nil {
		return fmt.Errorf("removing image %s: %w", id, err)
	}
	return nil
}

// ResolveImage returns the ID of the image called name (a name, an ID or
// an unambiguous ID prefix).
func (s *Store) ResolveImage(name string) (string, error) {
	img, err := s.s.Image(name)
	if err != nil {
		if named, perr := storeNameOf(name); perr == nil {
			if img, err = s.s.Image(named); err == nil {
				return img.ID, nil
			}
		}
		return "", fmt.Errorf("image %s: %w", name, err)
	}
	return img.ID, nil
}
