package imageset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/oci/archive"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/pkg/compression"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/transports"
	"go.podman.io/image/v5/types"
	"go.podman.io/storage/pkg/idtools"

	starchive "go.podman.io/storage/pkg/archive"

	"github.com/bootstore/bootstore/pkg/boundimages"
	"github.com/bootstore/bootstore/pkg/store"
	"github.com/bootstore/bootstore/pkg/sysroot"
)

// ErrOutputExists is returned when Save's output already exists.
var ErrOutputExists = errors.New("output exists")

// SaveOptions are Save's settings.
type SaveOptions struct {
	// Source is the OS image (any transport; usually a registry).
	Source types.ImageReference
	// Output is oci:DIR or oci-archive:FILE, without an image name; it
	// must not exist (an empty directory is accepted).
	Output types.ImageReference
	// System carries registries.conf, auth, TLS and signature policy.
	System *types.SystemContext
	// Compression recompresses every layer (nil: blobs are copied as the
	// source serves them, so digests stay the registry's).
	Compression *compression.Algorithm
	// RequireBootable refuses an OS image without a bootable label.
	RequireBootable bool
	// ReportWriter receives containers/image's progress bars (nil: none).
	ReportWriter io.Writer
}

// Saved describes a written set.
type Saved struct {
	Entries []Entry
	// Blobs and Bytes count the distinct blobs stored (manifests, configs,
	// layers), each once however many images share it.
	Blobs int
	Bytes int64
}

// Save writes the OS image opts.Source and every bound image it names into
// one new OCI layout at opts.Output. Nothing appears at the output unless
// the whole set was written.
func Save(ctx context.Context, opts SaveOptions) (*Saved, error) {
	if !IsCandidate(opts.Output) {
		return nil, fmt.Errorf("%w: the output must be oci:DIR or oci-archive:FILE without an image name, not %s",
			store.ErrBadReference, transports.ImageName(opts.Output))
	}
	isArchive := opts.Output.Transport().Name() == archive.Transport.Name()
	final, _, _ := splitPath(opts.Output)
	if err := checkAbsent(final, isArchive); err != nil {
		return nil, err
	}
	parent := filepath.Dir(final)
	work, err := os.MkdirTemp(parent, "."+filepath.Base(final)+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", transports.ImageName(opts.Output), err)
	}
	defer os.RemoveAll(work) // a no-op once renamed
	layoutDir := filepath.Join(work, "layout")

	w := &writer{opts: opts, dir: layoutDir, scratch: work, annotations: map[string]map[string]string{}}
	saved, err := w.write(ctx)
	if err != nil {
		return nil, err
	}
	if err := annotate(layoutDir, w.annotations); err != nil {
		return nil, err
	}
	if isArchive {
		tmp := filepath.Join(work, "archive.tar")
		if err := tarDir(layoutDir, tmp); err != nil {
			return nil, fmt.Errorf("writing %s: %w", final, err)
		}
		if err := os.Rename(tmp, final); err != nil {
			return nil, fmt.Errorf("writing %s: %w", final, err)
		}
	} else {
		os.Remove(final) // an empty directory, checked above
		if err := os.Rename(layoutDir, final); err != nil {
			return nil, fmt.Errorf("writing %s: %w", final, err)
		}
	}
	return saved, syncDir(parent)
}

func splitPath(ref types.ImageReference) (path, image string, ok bool) {
	return strings.Cut(ref.StringWithinTransport(), ":")
}

func checkAbsent(path string, isArchive bool) error {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !isArchive && fi.IsDir() {
		if entries, _ := os.ReadDir(path); len(entries) == 0 {
			return nil
		}
	}
	return fmt.Errorf("%w: %s (remove it first)", ErrOutputExists, path)
}

// writer fills one layout.
type writer struct {
	opts        SaveOptions
	dir         string
	scratch     string
	annotations map[string]map[string]string // by ref.name
}

func (w *writer) write(ctx context.Context) (*Saved, error) {
	hostName, err := store.NameOf(w.opts.Source)
	if err != nil {
		return nil, err
	}
	host, err := w.copyImage(ctx, w.opts.Source, hostName, RoleHost, w.opts.System)
	if err != nil {
		return nil, err
	}
	bound, err := w.discover(ctx, host, w.opts.Source)
	if err != nil {
		return nil, err
	}
	saved := &Saved{Entries: []Entry{host}}
	for _, b := range bound {
		ref, err := store.ParseRegistryReference(b.Ref)
		if err != nil {
			return nil, fmt.Errorf("bound image %s (from %s): %w", b.Ref, b.Entry, err)
		}
		sys := w.opts.System
		if b.AuthFile != "" {
			// The quadlet's AuthFile= is a path on the target host; use it
			// where the build machine has it too.
			if _, err := os.Stat(b.AuthFile); err == nil {
				c := *sys
				c.AuthFilePath = b.AuthFile
				sys = &c
			}
		}
		e, err := w.copyImage(ctx, ref, b.Ref, RoleBound, sys)
		if err != nil {
			return nil, fmt.Errorf("bound image %s (from %s): %w", b.Ref, b.Entry, err)
		}
		if e.Ref != "" {
			saved.Entries = append(saved.Entries, e)
		}
	}
	saved.Blobs, saved.Bytes, err = countBlobs(w.dir)
	return saved, err
}

// copyImage copies src into the layout as name and returns its entry. The
// source is read once by digest, so what is annotated is what was copied.
func (w *writer) copyImage(ctx context.Context, src types.ImageReference, name, role string, sys *types.SystemContext) (Entry, error) {
	what := transports.ImageName(src)
	if _, dup := w.annotations[name]; dup {
		return Entry{}, nil
	}
	srcDigest, err := store.RemoteDigest(ctx, sys, src)
	if err != nil {
		return Entry{}, err
	}
	dest, err := layout.NewReference(w.dir, name)
	if err != nil {
		return Entry{}, fmt.Errorf("naming %s in the image set: %w", what, err)
	}
	policy, err := signature.DefaultPolicy(sys)
	if err != nil {
		return Entry{}, fmt.Errorf("loading signature policy: %w", err)
	}
	pc, err := signature.NewPolicyContext(policy)
	if err != nil {
		return Entry{}, fmt.Errorf("loading signature policy: %w", err)
	}
	defer pc.Destroy()
	destSys := &types.SystemContext{}
	copyOpts := &copy.Options{SourceCtx: sys, DestinationCtx: destSys, ReportWriter: w.opts.ReportWriter}
	if w.opts.Compression != nil {
		destSys.CompressionFormat = w.opts.Compression
		copyOpts.ForceCompressionFormat = true
	}
	written, err := copy.Image(ctx, pc, dest, store.PinDigest(src, srcDigest), copyOpts)
	if err != nil {
		return Entry{}, fmt.Errorf("copying %s into the image set: %w", what, err)
	}
	d, err := manifest.Digest(written)
	if err != nil {
		return Entry{}, err
	}
	w.annotations[name] = map[string]string{
		AnnotationRole:         role,
		AnnotationReference:    name,
		AnnotationSourceDigest: srcDigest.String(),
	}
	return Entry{Role: role, Ref: name, Digest: d, SourceDigest: srcDigest, Image: dest}, nil
}

// discover reads the bound images of the host image just written, through
// a temporary store (the image is mounted, as for a pull).
func (w *writer) discover(ctx context.Context, host Entry, name types.ImageReference) (_ []boundimages.Image, err error) {
	root := filepath.Join(w.scratch, "store")
	st, err := store.Open(ctx, store.Options{GraphRoot: filepath.Join(root, "storage"), RunRoot: filepath.Join(root, "run"), TempDir: w.scratch})
	if err != nil {
		return nil, err
	}
	defer func() {
		st.Close()
		os.RemoveAll(root)
	}()
	p, err := st.PullImage(ctx, host.Image, store.PullOptions{System: &types.SystemContext{}, RequireBootable: w.opts.RequireBootable, Name: name})
	if err != nil {
		return nil, err
	}
	bound, err := st.DiscoverBound(p.ID)
	if err != nil {
		return nil, fmt.Errorf("reading the bound images of %s: %w", host.Ref, err)
	}
	return bound, nil
}

// annotate adds the set's annotations to the index entries by ref.name.
func annotate(dir string, annotations map[string]map[string]string) error {
	path := filepath.Join(dir, imgspecv1.ImageIndexFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var index imgspecv1.Index
	if err := json.Unmarshal(data, &index); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	for i, d := range index.Manifests {
		if a, ok := annotations[d.Annotations[imgspecv1.AnnotationRefName]]; ok {
			for k, v := range a {
				index.Manifests[i].Annotations[k] = v
			}
		}
	}
	data, err = json.Marshal(index)
	if err != nil {
		return err
	}
	return sysroot.WriteFileAtomic(path, data, 0o644)
}

// countBlobs counts the files under blobs/ and their bytes.
func countBlobs(dir string) (n int, size int64, err error) {
	err = filepath.WalkDir(filepath.Join(dir, imgspecv1.ImageBlobsDir), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if digest.Digest(filepath.Base(filepath.Dir(p))+":"+d.Name()).Validate() == nil {
			n++
			size += fi.Size()
		}
		return nil
	})
	return n, size, err
}

// tarDir writes dir as an uncompressed tarball owned by root, as the
// oci-archive transport does.
func tarDir(dir, dst string) (err error) {
	in, err := starchive.TarWithOptions(dir, &starchive.TarOptions{
		Compression: starchive.Uncompressed,
		ChownOpts:   &idtools.IDPair{UID: 0, GID: 0},
	})
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return err
	}
	return out.Sync()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
