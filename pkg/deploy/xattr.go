package deploy

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// xattr is one extended attribute of a layer entry.
type xattr struct {
	name  string
	value []byte
}

// readXattrs reads the xattrs of fd, or of path (not following a final
// symlink) when path is not "". A filesystem without xattrs has none.
func readXattrs(fd int, path string) ([]xattr, error) {
	list := func(buf []byte) (int, error) {
		if path == "" {
			return unix.Flistxattr(fd, buf)
		}
		return unix.Llistxattr(path, buf)
	}
	names, err := grow(list)
	if err == unix.ENOTSUP {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("listxattr: %w", err)
	}
	var xs []xattr
	for _, name := range strings.Split(string(names), "\x00") {
		if name == "" {
			continue
		}
		value, err := grow(func(buf []byte) (int, error) {
			if path == "" {
				return unix.Fgetxattr(fd, name, buf)
			}
			return unix.Lgetxattr(path, name, buf)
		})
		if err == unix.ENODATA {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", name, err)
		}
		xs = append(xs, xattr{name: name, value: value})
	}
	return xs, nil
}

// grow calls a list/get xattr function with a buffer of the size it asks for.
func grow(f func([]byte) (int, error)) ([]byte, error) {
	for {
		n, err := f(nil)
		if err != nil || n == 0 {
			return nil, err
		}
		buf := make([]byte, n)
		n, err = f(buf)
		if err == unix.ERANGE {
			continue // grew in between
		}
		return buf[:n], err
	}
}

// private reports overlay's own xattrs, which are layer format, not content.
func private(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.")
}

func public(xs []xattr) []xattr {
	var out []xattr
	for _, x := range xs {
		if !private(x.name) {
			out = append(out, x)
		}
	}
	return out
}

// unsupported rejects entries whose content overlayfs takes from elsewhere.
func unsupported(xs []xattr) error {
	for _, x := range xs {
		switch strings.TrimPrefix(strings.TrimPrefix(x.name, "trusted."), "user.") {
		case "overlay.redirect", "overlay.metacopy":
			return fmt.Errorf("%w: xattr %s", ErrUnsupported, x.name)
		}
	}
	return nil
}

// setXattrs sets the non-private xs on fd, or on path when path is not "".
func setXattrs(fd int, path string, xs []xattr) error {
	for _, x := range xs {
		if private(x.name) {
			continue
		}
		var err error
		if path == "" {
			err = unix.Fsetxattr(fd, x.name, x.value, 0)
		} else {
			err = unix.Lsetxattr(path, x.name, x.value, 0)
		}
		if err != nil {
			return fmt.Errorf("setxattr %s: %w", x.name, err)
		}
	}
	return nil
}
