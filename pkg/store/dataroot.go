package store

import "path/filepath"

// LayerDataRoot is the directory that holds every layer directory
// LayerDirs returns, each as <layer id>/diff (overlay) or <layer id> (vfs):
// what a composefs image's redirects are relative to.
func (s *Store) LayerDataRoot() string {
	if s.driver == DriverVFS {
		return filepath.Join(s.opts.GraphRoot, "vfs", "dir")
	}
	return filepath.Join(s.opts.GraphRoot, "overlay")
}
