package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"go.podman.io/storage"
)

// LayerDirs returns the directories holding an image's layers as the graph
// driver keeps them, base layer first, for building a deployment without
// mounting or exporting the image. With overlay each directory is one
// layer's diff (whiteouts as 0/0 character devices, opaque directories
// marked by xattr); with vfs every layer is a full tree, so the top layer
// alone is returned.
func (s *Store) LayerDirs(imageID string) ([]string, error) {
	img, err := s.s.Image(imageID)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", imageID, err)
	}
	var chain []string
	for id := img.TopLayer; id != ""; {
		l, err := s.s.Layer(id)
		if err != nil {
			return nil, fmt.Errorf("layer %s of image %s: %w", id, imageID, err)
		}
		chain = append(chain, l.ID)
		id = l.Parent
		if s.driver == DriverVFS {
			break
		}
	}
	dirs := make([]string, len(chain))
	for i, id := range chain {
		dir := filepath.Join(s.opts.GraphRoot, "overlay", id, "diff")
		if s.driver == DriverVFS {
			dir = filepath.Join(s.opts.GraphRoot, "vfs", "dir", id)
		}
		if _, err := os.Lstat(dir); err != nil {
			return nil, fmt.Errorf("layer %s of image %s: %w", id, imageID, err)
		}
		dirs[len(chain)-1-i] = dir
	}
	return dirs, nil
}

// ReleaseDriverMount undoes the graph driver's private bind mount of its
// home directory (overlay makes GRAPHROOT/overlay a mount of its own). While
// it exists, link(2) from a layer directory to a deployment on the same
// filesystem fails with EXDEV, so deployments could not hardlink. The driver
// is set up again by the next call that needs it. Image mounts that an
// interrupted bootstore left behind are undone first; it fails if a
// container's layer is mounted.
func (s *Store) ReleaseDriverMount() error {
	if err := s.releaseStaleImageMounts(); err != nil {
		return err
	}
	if _, err := s.s.Shutdown(false); err != nil {
		return fmt.Errorf("releasing the store's driver mount: %w", err)
	}
	return nil
}

// releaseStaleImageMounts unmounts every mounted layer that is not a
// container's. bootstore mounts image layers only briefly (reading an
// image's bound-images.d or embedded store) and under the sysroot lock, so
// one still counted as mounted was left by a bootstore that was killed
// (SIGKILL, OOM, a stopped timer unit) before it unmounted. The count lives
// in the run root and the mount in the kernel; without this every later
// deployment would fail until a reboot cleared both. Containers' layers
// are left alone: podman may be running them.
func (s *Store) releaseStaleImageMounts() error {
	layers, err := s.s.Layers()
	if err != nil {
		return fmt.Errorf("listing the store's layers: %w", err)
	}
	containers, err := s.s.Containers()
	if err != nil {
		return fmt.Errorf("listing the store's containers: %w", err)
	}
	containerLayer := make(map[string]bool, len(containers))
	for _, c := range containers {
		containerLayer[c.LayerID] = true
	}
	for _, l := range layers {
		if l.MountCount == 0 || containerLayer[l.ID] {
			continue
		}
		if _, err := s.s.Unmount(l.ID, true); err != nil && !errors.Is(err, storage.ErrLayerNotMounted) {
			return fmt.Errorf("unmounting layer %s, left mounted by an interrupted command: %w", l.ID, err)
		}
		fmt.Fprintf(s.opts.Warn, "Note: unmounted layer %s, left mounted by an interrupted command.\n", l.ID)
	}
	return nil
}

// LayerChains returns, per image ID, the IDs of the layers it uses (top
// first), and every layer's uncompressed size.
func (s *Store) LayerChains() (map[string][]string, map[string]int64, error) {
	layers, err := s.s.Layers()
	if err != nil {
		return nil, nil, err
	}
	parent := make(map[string]string, len(layers))
	sizes := make(map[string]int64, len(layers))
	for _, l := range layers {
		parent[l.ID] = l.Parent
		sizes[l.ID] = l.UncompressedSize
	}
	images, err := s.s.Images()
	if err != nil {
		return nil, nil, err
	}
	chains := make(map[string][]string, len(images))
	for _, img := range images {
		for id := img.TopLayer; id != ""; id = parent[id] {
			chains[img.ID] = append(chains[img.ID], id)
		}
	}
	return chains, sizes, nil
}
