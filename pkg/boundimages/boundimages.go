// Package boundimages discovers the logically bound images (LBIs) of an OS
// image: the app images that must be present in the unified store before a
// deployment of that OS image is considered ready.
//
// # Flow
//
// The caller mounts the OS image read-only and passes the mount point as root;
// nothing outside root is ever read, and nothing is written. [Discover] then
//
//  1. lists [Dir] inside root (a missing directory means "no LBIs");
//  2. requires every entry there to be a symlink named *.image or *.container;
//  3. resolves each symlink inside root, as if root were "/" (absolute targets
//     start at root, ".." stops at root, symlinks met on the way are followed
//     the same way), to a Podman Quadlet file of the same kind;
//  4. reads Image= and AuthFile= from the quadlet's "Image" section (.image)
//     or "Container" section (.container), and normalizes Image= to a fully
//     qualified reference;
//  5. returns one [Image] per distinct reference, sorted by entry.
//
// # Files read
//
// An entry in /usr/lib/bootc/bound-images.d, for example
//
//	/usr/lib/bootc/bound-images.d/app.image -> /usr/share/containers/systemd/app.image
//
// points to a quadlet in systemd unit syntax (comments, "\" continuation
// lines, last assignment wins):
//
//	[Image]                          # app.image
//	Image=quay.io/example/app:1.2
//	AuthFile=/etc/containers/app-auth.json
//
//	[Container]                      # web.container
//	Image=quay.io/example/web:latest # or Image=app.image, see below
//
// Only Image= and AuthFile= are read; every other key is the business of
// podman's quadlet generator. Quadlets that no entry links to are never read.
//
// # Differences from bootc
//
// The rules are bootc's (crates/lib/src/boundimage.rs), with these
// differences, all of which bootc users asked for or which turn a late
// failure into an early, named one:
//   - AuthFile= is honoured (bootc rejects it) and returned in [Image.AuthFile];
//     it must be an absolute host path.
//   - A .container whose Image= names a .image quadlet ("Image=app.image")
//     is followed to that .image file, looked up in the same directory as the
//     resolved .container (quadlet itself searches all its unit directories),
//     and the .image's Image= is pulled; ImageTag= is ignored. AuthFile= comes
//     from the .image, or from the .container if only it sets one; both
//     setting different values is an error. bootc passes "app.image" to
//     podman pull as if it were an image name.
//   - The link target must have the same extension as the entry (bootc looks
//     at the entry name only).
//   - Image= is validated and normalized at discovery time (bootc hands the
//     raw string to podman pull). Short names are expanded the Docker way
//     ("nginx" -> "docker.io/library/nginx:latest"), not through
//     registries.conf short-name aliases; a "docker://" prefix is accepted;
//     a reference with both a tag and a digest keeps only the digest
//     (containers/image cannot pull both).
//   - "\" continuation lines are joined with a space, as systemd does, and
//     one pair of surrounding quotes is removed from values (bootc reads
//     values verbatim).
//   - Duplicate references are merged (keeping the first entry); the same
//     reference bound with two different AuthFile= values is an error.
//   - Every invalid entry is reported, not only the first.
//
// Unit files are parsed by github.com/coreos/go-systemd/v22/unit, which
// rejects lines longer than 2048 bytes and lines without "=" (systemd would
// skip the latter with a warning); both are reported as a malformed unit file.
package boundimages

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"unicode/utf8"

	securejoin "github.com/cyphar/filepath-securejoin"
)

// Dir is the directory of bound-image entries, relative to the image root.
// It may only contain symlinks to .image or .container quadlets.
const Dir = "usr/lib/bootc/bound-images.d"

// Quadlet kinds, by file extension.
const (
	extImage     = ".image"
	extContainer = ".container"
	extBuild     = ".build"
)

// maxQuadletSize bounds how much of a quadlet file is read; real ones are a
// few hundred bytes.
const maxQuadletSize = 1 << 20

// Image is one logically bound image, as declared by an OS image.
type Image struct {
	// Ref is the image to pull, as a fully qualified, normalized docker
	// reference string: "quay.io/x/y:latest" or "quay.io/x/y@sha256:...".
	// A name without a tag or digest gets ":latest".
	Ref string
	// AuthFile is the host path of the registry credentials to pull Ref
	// with, from the quadlet's AuthFile=; "" means the default credentials.
	// It is always absolute and cleaned.
	AuthFile string
	// Entry is the bound-images.d symlink that declares the image, as an
	// absolute path inside the image, e.g.
	// "/usr/lib/bootc/bound-images.d/app.image".
	Entry string
	// Quadlet is the file Entry resolves to, as an absolute path inside
	// the image with every symlink resolved, e.g.
	// "/usr/share/containers/systemd/app.image". For a .container whose
	// Image= names a .image quadlet, it is the .container.
	Quadlet string
}

// ErrInvalid is the kind of every error about the content of an OS image's
// bound images: errors.Is(err, ErrInvalid) reports whether the image, rather
// than the host, is at fault.
var ErrInvalid = errors.New("invalid logically bound image")

// InvalidError describes one invalid bound-image entry. It matches
// [ErrInvalid] with errors.Is.
type InvalidError struct {
	// Entry is the offending bound-images.d entry (or Dir itself), as an
	// absolute path inside the image.
	Entry string
	// Reason says what is wrong and names any other file involved
	// (the quadlet, or a second entry).
	Reason string
}

// Error returns "invalid logically bound image ENTRY: REASON".
func (e *InvalidError) Error() string {
	return ErrInvalid.Error() + " " + e.Entry + ": " + e.Reason
}

// Is reports whether target is [ErrInvalid].
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

// Discover returns the logically bound images that the OS image mounted at
// root declares in [Dir], sorted by Entry and deduplicated by Ref (the first
// entry is kept).
//
// A missing [Dir] yields nil, nil. If any entry is invalid, Discover returns
// nil and an error that matches [ErrInvalid] and names every offending entry
// (one [InvalidError] each, joined). Other errors (root missing, permission
// denied, I/O) are returned as they are, wrapped with the path involved.
//
// root must be a directory; only files inside it are read, with symlinks
// resolved as if root were "/". The tree under root must not change while
// Discover runs (it is meant for a read-only mount).
func Discover(root string) ([]Image, error) {
	return DiscoverDir(root, Dir)
}

// DiscoverDir is Discover reading the entries of dir (relative to root, e.g.
// "usr/lib/bootc/physically-bound-images.d") instead of [Dir]; the rules and
// errors are the same.
func DiscoverDir(root, dir string) ([]Image, error) {
	entriesDir := strings.Trim(path.Clean("/"+dir), "/")
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("bound images: image root %q: %w", root, err)
	}
	if fi, err := os.Stat(root); err != nil {
		return nil, fmt.Errorf("bound images: image root: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("bound images: image root %s is not a directory", root)
	}

	dirEntry := "/" + entriesDir
	resolved, err := securejoin.SecureJoin(root, entriesDir)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, &InvalidError{Entry: dirEntry, Reason: "too many levels of symbolic links"}
		}
		return nil, fmt.Errorf("bound images: resolving %s in %s: %w", dirEntry, root, err)
	}
	fi, err := os.Stat(resolved)
	if securejoin.IsNotExist(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("bound images: %w", err)
	}
	if !fi.IsDir() {
		return nil, &InvalidError{Entry: dirEntry, Reason: "not a directory"}
	}
	dents, err := os.ReadDir(resolved) // sorted by name, so by Entry
	if err != nil {
		return nil, fmt.Errorf("bound images: %w", err)
	}

	d := discoverer{root: root, dir: entriesDir}
	var imgs []Image
	var invalid []error
	for _, de := range dents {
		img, err := d.entry(de)
		var inv *InvalidError
		if errors.As(err, &inv) {
			invalid = append(invalid, err)
			continue
		} else if err != nil {
			return nil, err
		}
		imgs = append(imgs, img)
	}

	imgs, dupErrs := dedupe(imgs)
	invalid = append(invalid, dupErrs...)
	switch len(invalid) {
	case 0:
		return imgs, nil
	case 1:
		return nil, invalid[0]
	default:
		return nil, errors.Join(invalid...)
	}
}

// Names returns the Ref of every image, in order.
func Names(imgs []Image) []string {
	if imgs == nil {
		return nil
	}
	names := make([]string, len(imgs))
	for i, img := range imgs {
		names[i] = img.Ref
	}
	return names
}

// dedupe keeps the first Image of every Ref. The same Ref with two different
// AuthFile values is an error naming both entries.
func dedupe(imgs []Image) ([]Image, []error) {
	var out []Image
	var errs []error
	first := make(map[string]Image, len(imgs))
	for _, img := range imgs {
		prev, seen := first[img.Ref]
		if !seen {
			first[img.Ref] = img
			out = append(out, img)
			continue
		}
		if prev.AuthFile != img.AuthFile {
			errs = append(errs, &InvalidError{Entry: img.Entry, Reason: fmt.Sprintf(
				"binds %s with %s, but %s binds it with %s",
				img.Ref, describeAuth(img.AuthFile), prev.Entry, describeAuth(prev.AuthFile))})
		}
	}
	return out, errs
}

func describeAuth(authFile string) string {
	if authFile == "" {
		return "no AuthFile="
	}
	return "AuthFile=" + authFile
}

// discoverer resolves and reads entries inside one image root.
type discoverer struct {
	root string // absolute and clean
	dir  string // the entries' directory relative to root, e.g. Dir
}

// entry validates one directory entry of Dir and returns its image. Errors
// about the image's content are *InvalidError.
func (d discoverer) entry(de fs.DirEntry) (Image, error) {
	name := de.Name()
	entry := path.Join("/", d.dir, name)
	invalid := func(format string, args ...any) error {
		return &InvalidError{Entry: entry, Reason: fmt.Sprintf(format, args...)}
	}
	if !utf8.ValidString(name) {
		return Image{}, &InvalidError{Entry: fmt.Sprintf("%q", entry), Reason: "file name is not valid UTF-8"}
	}
	if de.Type()&fs.ModeSymlink == 0 {
		return Image{}, invalid("not a symlink (%s may only contain symlinks to .image or .container quadlets)", "/"+d.dir)
	}
	kind := path.Ext(name)
	if kind != extImage && kind != extContainer || name == kind {
		return Image{}, invalid("name must end in .image or .container")
	}

	quadlet, host, err := d.resolve(entry)
	if err != nil {
		var pr problem
		if errors.As(err, &pr) {
			if errors.Is(err, errMissing) {
				return Image{}, invalid("dangling symlink: %v", pr)
			}
			return Image{}, invalid("%v", pr)
		}
		return Image{}, err
	}
	if path.Ext(quadlet) != kind {
		return Image{}, invalid("links to %s, which is not a %s quadlet", quadlet, kind)
	}

	section := "Image"
	if kind == extContainer {
		section = "Container"
	}
	q, err := readQuadlet(host, quadlet, section)
	if err != nil {
		var pr problem
		if errors.As(err, &pr) {
			return Image{}, invalid("%v", pr)
		}
		return Image{}, err
	}

	image, authFile, from := q.image, q.authFile, quadlet
	if kind == extContainer {
		switch {
		case strings.HasSuffix(image, extBuild):
			return Image{}, invalid("%s: Image=%s names a .build quadlet; images built on the host cannot be bound", quadlet, image)
		case strings.HasSuffix(image, extImage):
			if strings.Contains(image, "/") {
				return Image{}, invalid("%s: Image=%s: a .image quadlet must be named by its file name alone", quadlet, image)
			}
			from = path.Join(path.Dir(quadlet), image)
			imgQuadlet, imgHost, err := d.resolve(from)
			if err != nil {
				var pr problem
				if errors.As(err, &pr) {
					return Image{}, invalid("%s: Image=%s: %v", quadlet, image, pr)
				}
				return Image{}, err
			}
			if path.Ext(imgQuadlet) != extImage {
				return Image{}, invalid("%s: Image=%s resolves to %s, which is not a .image quadlet", quadlet, image, imgQuadlet)
			}
			iq, err := readQuadlet(imgHost, imgQuadlet, "Image")
			if err != nil {
				var pr problem
				if errors.As(err, &pr) {
					return Image{}, invalid("%v (named by Image= in %s)", pr, quadlet)
				}
				return Image{}, err
			}
			if q.authFile != "" && iq.authFile != "" && q.authFile != iq.authFile {
				return Image{}, invalid("%s sets AuthFile=%s but its image comes from %s, which sets AuthFile=%s",
					quadlet, q.authFile, imgQuadlet, iq.authFile)
			}
			image, from = iq.image, imgQuadlet
			if iq.authFile != "" {
				authFile = iq.authFile
			}
		}
	}

	ref, err := normalize(image)
	if err != nil {
		return Image{}, invalid("%s: Image=%s is not a valid image reference: %v", from, image, err)
	}
	return Image{Ref: ref, AuthFile: authFile, Entry: entry, Quadlet: quadlet}, nil
}

// problem is a fault of the image's content found by a helper that does not
// know which entry it serves; the caller wraps it in an *InvalidError.
type problem string

func (p problem) Error() string { return string(p) }

// errMissing marks the problem "the file does not exist".
var errMissing = errors.New("missing file")

// missing is a problem that also matches errMissing.
type missing struct{ problem }

func (missing) Is(target error) bool { return target == errMissing }

func (m missing) Unwrap() error { return m.problem }

// resolve resolves p (an absolute path inside the image) inside the image
// root and returns it as a path inside the image and as a host path, both
// free of symlinks. The file must exist and be a regular file; otherwise
// the error wraps a problem (matching errMissing if it does not exist).
func (d discoverer) resolve(p string) (inImage, host string, err error) {
	host, err = securejoin.SecureJoin(d.root, p)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return "", "", problem("too many levels of symbolic links")
		}
		return "", "", fmt.Errorf("bound images: resolving %s in %s: %w", p, d.root, err)
	}
	rel, err := filepath.Rel(d.root, host)
	if err != nil { // cannot happen: SecureJoin returns a path under root
		return "", "", fmt.Errorf("bound images: resolving %s in %s: %w", p, d.root, err)
	}
	inImage = path.Clean("/" + filepath.ToSlash(rel))
	fi, err := os.Stat(host)
	switch {
	case securejoin.IsNotExist(err):
		return "", "", missing{problem(inImage + " does not exist in the image")}
	case err != nil:
		return "", "", fmt.Errorf("bound images: %s: %w", inImage, err)
	case !fi.Mode().IsRegular():
		return "", "", problem(inImage + " is not a regular file")
	}
	return inImage, host, nil
}

// quadlet is what Discover needs from one quadlet file.
type quadlet struct {
	image    string // Image=, unquoted, specifiers checked; never ""
	authFile string // AuthFile=, absolute and clean, or ""
}

// readQuadlet reads the quadlet at host (named inImage in errors) and
// returns Image= and AuthFile= of section. Faults of its content are a
// problem naming inImage.
func readQuadlet(host, inImage, section string) (quadlet, error) {
	bad := func(format string, args ...any) error {
		return problem(inImage + ": " + fmt.Sprintf(format, args...))
	}
	f, err := os.Open(host)
	if err != nil {
		return quadlet{}, fmt.Errorf("bound images: %s: %w", inImage, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxQuadletSize+1))
	if err != nil {
		return quadlet{}, fmt.Errorf("bound images: reading %s: %w", inImage, err)
	}
	if len(data) > maxQuadletSize {
		return quadlet{}, bad("larger than %d bytes", maxQuadletSize)
	}

	vals, err := parseUnit(bytes.NewReader(data), section, "Image", "AuthFile")
	if err != nil {
		return quadlet{}, bad("malformed unit file: %v", err)
	}
	var q quadlet
	if q.image, err = specValue(vals["Image"]); err != nil {
		return quadlet{}, bad("Image=%s: %v", vals["Image"], err)
	}
	if q.image == "" {
		return quadlet{}, bad("no Image= in [%s] section", section)
	}
	if q.authFile, err = specValue(vals["AuthFile"]); err != nil {
		return quadlet{}, bad("AuthFile=%s: %v", vals["AuthFile"], err)
	}
	if q.authFile != "" {
		if !filepath.IsAbs(q.authFile) {
			return quadlet{}, bad("AuthFile=%s is not an absolute path", q.authFile)
		}
		q.authFile = filepath.Clean(q.authFile)
	}
	return q, nil
}
