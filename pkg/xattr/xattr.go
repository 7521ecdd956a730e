// Package xattr reads and writes the extended attributes of one file,
// named by an open descriptor or by a path whose final symlink is not
// followed (the l* calls), which is how deployments, the /etc merge and
// set-unified all have to treat symlinks.
//
// Lists come back sorted by name, so two files' attributes compare with
// slices.Equal-style loops. A filesystem without xattr support has none
// (ENOTSUP reads as an empty list), and an attribute removed between the
// list and the read is skipped rather than failing.
package xattr

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Attr is one extended attribute.
type Attr struct {
	Name  string
	Value []byte
}

// Equal reports whether a and b have the same name and value.
func (a Attr) Equal(b Attr) bool { return a.Name == b.Name && bytes.Equal(a.Value, b.Value) }

// File names the file whose attributes are read or written: an open
// descriptor (FD) or a path (Path), whose final symlink is not followed.
type File struct {
	fd   int
	path string
}

// FD names the file open as fd.
func FD(fd int) File { return File{fd: fd} }

// Path names the file at p itself, a symlink not followed.
func Path(p string) File { return File{fd: -1, path: p} }

func (f File) list(buf []byte) (int, error) {
	if f.path == "" {
		return unix.Flistxattr(f.fd, buf)
	}
	return unix.Llistxattr(f.path, buf)
}

func (f File) get(name string, buf []byte) (int, error) {
	if f.path == "" {
		return unix.Fgetxattr(f.fd, name, buf)
	}
	return unix.Lgetxattr(f.path, name, buf)
}

func (f File) set(a Attr) error {
	if f.path == "" {
		return unix.Fsetxattr(f.fd, a.Name, a.Value, 0)
	}
	return unix.Lsetxattr(f.path, a.Name, a.Value, 0)
}

func (f File) remove(name string) error {
	if f.path == "" {
		return unix.Fremovexattr(f.fd, name)
	}
	return unix.Lremovexattr(f.path, name)
}

// Names lists the names of f's attributes, unsorted.
func Names(f File) ([]string, error) {
	raw, err := grow(f.list)
	if err == unix.ENOTSUP {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("listxattr: %w", err)
	}
	var names []string
	for _, n := range strings.Split(string(raw), "\x00") {
		if n != "" {
			names = append(names, n)
		}
	}
	return names, nil
}

// List reads every attribute of f, sorted by name.
func List(f File) ([]Attr, error) {
	names, err := Names(f)
	if err != nil {
		return nil, err
	}
	var out []Attr
	for _, n := range names {
		v, err := grow(func(buf []byte) (int, error) { return f.get(n, buf) })
		if err == unix.ENODATA {
			continue // removed since it was listed
		} else if err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", n, err)
		}
		if v == nil {
			v = []byte{}
		}
		out = append(out, Attr{Name: n, Value: v})
	}
	slices.SortFunc(out, func(a, b Attr) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Set sets each of attrs on f, leaving its other attributes alone.
func Set(f File, attrs []Attr) error {
	for _, a := range attrs {
		if err := f.set(a); err != nil {
			return fmt.Errorf("setxattr %s: %w", a.Name, err)
		}
	}
	return nil
}

// Replace makes attrs the attributes of f: those f has and attrs lacks are
// removed (say, an ACL inherited from a default ACL), except the names
// keep reports true for, which stay as they are.
func Replace(f File, attrs []Attr, keep func(name string) bool) error {
	have, err := Names(f)
	if err != nil {
		return err
	}
	for _, n := range have {
		if (keep != nil && keep(n)) || slices.ContainsFunc(attrs, func(a Attr) bool { return a.Name == n }) {
			continue
		}
		if err := f.remove(n); err != nil && err != unix.ENODATA {
			return fmt.Errorf("removexattr %s: %w", n, err)
		}
	}
	return Set(f, attrs)
}

// Copy sets every attribute of from on to.
func Copy(from, to File) error {
	attrs, err := List(from)
	if err != nil {
		return err
	}
	return Set(to, attrs)
}

// Filter returns the attributes of attrs that keep accepts.
func Filter(attrs []Attr, keep func(name string) bool) []Attr {
	var out []Attr
	for _, a := range attrs {
		if keep(a.Name) {
			out = append(out, a)
		}
	}
	return out
}

// grow calls a list or get function with a buffer of the size it asks for,
// again if the value grew in between.
func grow(f func([]byte) (int, error)) ([]byte, error) {
	for {
		n, err := f(nil)
		if err != nil || n == 0 {
			return nil, err
		}
		buf := make([]byte, n)
		n, err = f(buf)
		if err == unix.ERANGE {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
