package store

import (
	"fmt"

	"github.com/docker/go-units"
	"golang.org/x/sys/unix"
)

// checkFree fails with ErrInsufficientSpace when the filesystem holding path
// has less than need bytes available. It counts Bavail, not Bfree: the
// filesystem's root reserve is for keeping the host alive, not for images.
func checkFree(path string, need int64, name string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fmt.Errorf("checking free space in %s: %w", path, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if need > free {
		return fmt.Errorf("%w in %s for %s: its manifest declares %s still to fetch, %s available",
			ErrInsufficientSpace, path, name, units.BytesSize(float64(need)), units.BytesSize(float64(free)))
	}
	return nil
}
