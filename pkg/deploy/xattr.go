package deploy

import (
	"fmt"
	"strings"

	"github.com/bootstore/bootstore/pkg/xattr"
)

// xattrFile names fd, or path (its final symlink not followed) when path
// is not "".
func xattrFile(fd int, path string) xattr.File {
	if path == "" {
		return xattr.FD(fd)
	}
	return xattr.Path(path)
}

// readXattrs reads the xattrs of fd, or of path (not following a final
// symlink) when path is not "". A filesystem without xattrs has none.
func readXattrs(fd int, path string) ([]xattr.Attr, error) {
	return xattr.List(xattrFile(fd, path))
}

// private reports overlay's own xattrs, which are layer format, not content.
func private(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.")
}

func public(xs []xattr.Attr) []xattr.Attr {
	return xattr.Filter(xs, func(name string) bool { return !private(name) })
}

// unsupported rejects entries whose content overlayfs takes from elsewhere.
func unsupported(xs []xattr.Attr) error {
	for _, x := range xs {
		switch strings.TrimPrefix(strings.TrimPrefix(x.Name, "trusted."), "user.") {
		case "overlay.redirect", "overlay.metacopy":
			return fmt.Errorf("%w: xattr %s", ErrUnsupported, x.Name)
		}
	}
	return nil
}

// setXattrs sets the non-private xs on fd, or on path when path is not "".
func setXattrs(fd int, path string, xs []xattr.Attr) error {
	return xattr.Set(xattrFile(fd, path), public(xs))
}
