// Package embed builds OS images with "physically bound" app images: the
// apps travel inside the OS image, in a read-only containers/storage overlay
// store that podman reads as an additional image store, layer by layer.
//
// Lifecycle of one Embed call:
//
//  1. open the base and check its signature policy; copy its layer blobs,
//     unchanged, into a private OCI layout, and scan them for the quadlets of
//     AppsDir (and for files already at the store path, which are refused);
//  2. resolve the apps (explicit ones, then the base's quadlets), refuse name
//     clashes, order them by name, and check the free space;
//  3. for every distinct app layer (by layer ID, i.e. chain ID: apps sharing
//     layers share them), write one OS layer: the app layer's entries under
//     STORE/overlay/<layer ID>/diff/, content and attributes byte-identical,
//     plus the overlay driver's link files and the layer's tar-split;
//  4. write one metadata layer: STORE/overlay-layers/layers.json,
//     STORE/overlay-images/images.json and the images' manifests and configs;
//  5. write the config (the base's, with the new DiffIDs, history entries and
//     the label LabelStore) and the manifest, and copy the layout to Dest.
//
// Every added layer is a deterministic function of its inputs (fixed entry
// order, fixed attributes for the entries bootstore adds, compression with
// fixed settings), so an app layer's blob is the same whatever the base,
// the build time or the other apps, and building twice gives the same
// manifest digest. Nothing is written to Dest until the whole image is
// built; the private layout is removed on return.
package embed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/docker/go-units"
	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/transports"
	"go.podman.io/image/v5/types"
	"go.podman.io/storage"
	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/pkg/boundimages"
	"github.com/bootstore/bootstore/pkg/embedded"
	"github.com/bootstore/bootstore/pkg/store"
)

// DefaultStorePath is where the embedded store lives in the OS image.
const DefaultStorePath = embedded.DefaultPath

// DefaultAppsDir is the OS image's directory of symlinks to the quadlets of
// its physically bound images (bootc's bound-images.d, for embedded apps).
const DefaultAppsDir = "/usr/lib/bootc/physically-bound-images.d"

// LabelStore is the config label of an OS image built by Embed: the
// absolute path of its embedded store.
const LabelStore = embedded.Label

// Compression formats of the layers Embed adds.
const (
	CompressionGzip = "gzip"
	CompressionZstd = "zstd"
)

// ErrAppClash is wrapped when two apps claim the same name.
var ErrAppClash = errors.New("app name clash")

// App is one app image to embed.
type App struct {
	// Ref is where to read it from (any transport).
	Ref types.ImageReference
	// Name is the name podman will know it by; "" takes Ref's registry name.
	Name string
}

// Options configure Embed.
type Options struct {
	Base types.ImageReference
	Apps []App
	// AppsDir is the base's directory of quadlet symlinks naming more apps
	// (DefaultAppsDir when ""); a missing directory adds none.
	AppsDir string
	// StorePath is the embedded store's absolute path (DefaultStorePath
	// when "").
	StorePath   string
	Compression string // CompressionGzip (default) or CompressionZstd
	Dest        types.ImageReference
	System      *types.SystemContext
	// TempDir holds the image while it is built ("": the system's).
	TempDir string
	// Log receives one line per step (nil: nothing).
	Log io.Writer
}

// Result describes the image Embed wrote.
type Result struct {
	Digest digest.Digest
	Apps   []EmbeddedApp
	// Layers is the number of distinct app layers embedded.
	Layers int
}

// EmbeddedApp is one app of the result.
type EmbeddedApp struct {
	Name    string
	ID      string // image ID in the embedded store
	Digest  digest.Digest
	Layers  []string // layer IDs, base first
	Created string
}

// app is one resolved app.
type app struct {
	name string
	src  *source
}

// Embed builds the OS image and writes it to opts.Dest.
func Embed(ctx context.Context, opts Options) (*Result, error) {
	if opts.StorePath == "" {
		opts.StorePath = DefaultStorePath
	}
	if opts.AppsDir == "" {
		opts.AppsDir = DefaultAppsDir
	}
	if opts.Compression == "" {
		opts.Compression = CompressionGzip
	}
	if opts.Compression != CompressionGzip && opts.Compression != CompressionZstd {
		return nil, fmt.Errorf("unknown compression format %q (gzip or zstd)", opts.Compression)
	}
	storeRel := strings.Trim(path.Clean("/"+opts.StorePath), "/")
	if !path.IsAbs(opts.StorePath) || storeRel == "" || storeRel != strings.Trim(opts.StorePath, "/") {
		return nil, fmt.Errorf("--store-path %q must be a clean absolute path below /", opts.StorePath)
	}
	sys := opts.System
	if sys == nil {
		sys = &types.SystemContext{}
	}
	logf := func(format string, args ...any) {
		if opts.Log != nil {
			fmt.Fprintf(opts.Log, format+"\n", args...)
		}
	}
	policy, err := signature.DefaultPolicy(sys)
	if err != nil {
		return nil, fmt.Errorf("loading signature policy: %w", err)
	}
	pc, err := signature.NewPolicyContext(policy)
	if err != nil {
		return nil, fmt.Errorf("loading signature policy: %w", err)
	}
	defer pc.Destroy()

	work, err := os.MkdirTemp(opts.TempDir, "bootstore-embed-")
	if err != nil {
		return nil, fmt.Errorf("creating a work directory: %w", err)
	}
	defer os.RemoveAll(work)
	lay, err := newLayout(filepath.Join(work, "layout"), opts.Compression)
	if err != nil {
		return nil, err
	}

	// 1. The base.
	base, err := openSource(ctx, sys, pc, opts.Base)
	if err != nil {
		return nil, fmt.Errorf("base: %w", err)
	}
	defer base.Close()
	logf("base %s: %d layers", base.name, len(base.layers))
	tree := &baseTree{root: filepath.Join(work, "base-tree"), store: storeRel}
	if err := os.Mkdir(tree.root, 0o700); err != nil {
		return nil, err
	}
	var baseSize int64
	for _, l := range base.layers {
		baseSize += l.Size
	}
	if err := checkFree(work, baseSize, "the base image "+base.name); err != nil {
		return nil, err
	}
	for _, l := range base.layers {
		if err := lay.addBaseLayer(ctx, base, l, tree); err != nil {
			return nil, fmt.Errorf("base: %w", err)
		}
	}

	// 2. The apps.
	apps, err := resolveApps(ctx, sys, pc, opts, tree.root)
	defer func() {
		for _, a := range apps {
			a.src.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	if len(apps) == 0 {
		return nil, fmt.Errorf("no apps to embed: name them as arguments or in the base's %s", opts.AppsDir)
	}
	if err := checkAppsFit(work, apps); err != nil {
		return nil, err
	}

	// 3. One OS layer per distinct app layer.
	res := &Result{}
	var records []storage.Layer
	done := map[string]bool{}
	var images []storeImage
	for _, a := range apps {
		ea := EmbeddedApp{Name: a.name, ID: a.src.configD.Encoded(), Digest: a.src.digest}
		parent := ""
		var lowers []string
		for i, l := range a.src.layers {
			id := layerID(parent, a.src.diffIDs[i])
			ea.Layers = append(ea.Layers, id)
			if !done[id] {
				rec, err := lay.addAppLayer(ctx, a.src, l, a.src.diffIDs[i], layerPaths{store: storeRel, id: id}, lowers)
				if err != nil {
					return nil, fmt.Errorf("embedding %s: layer %s: %w", a.name, l.Digest, err)
				}
				rec.Parent = parent
				records = append(records, *rec)
				done[id] = true
				res.Layers++
				logf("app %s: layer %s -> %s/overlay/%s", a.name, l.Digest, opts.StorePath, id)
			}
			lowers = append([]string{id}, lowers...)
			parent = id
		}
		images = append(images, storeImage{names: []string{a.name}, manifest: a.src.manifest, mdigest: a.src.digest,
			config: a.src.config, cdigest: a.src.configD, created: configCreated(a.src), top: parent})
		ea.Created = configCreated(a.src).String()
		res.Apps = append(res.Apps, ea)
	}
	images, err = mergeNames(images)
	if err != nil {
		return nil, err
	}

	// 4. The metadata layer.
	if err := lay.addMetadataLayer(storeRel, records, images); err != nil {
		return nil, fmt.Errorf("writing the store's metadata layer: %w", err)
	}

	// 5. Config, manifest, copy.
	if err := lay.finish(base, opts.StorePath); err != nil {
		return nil, err
	}
	d, err := copyOut(ctx, sys, lay, opts.Dest)
	if err != nil {
		return nil, err
	}
	res.Digest = d
	return res, nil
}

// resolveApps opens the explicit apps and those of the base's AppsDir,
// names them, drops exact duplicates, refuses clashes and sorts them by name.
func resolveApps(ctx context.Context, sys *types.SystemContext, pc *signature.PolicyContext, opts Options, treeRoot string) ([]app, error) {
	var apps []app
	add := func(name string, ref types.ImageReference, origin string) error {
		s, err := openSource(ctx, sys, pc, ref)
		if err != nil {
			return fmt.Errorf("app %s: %w", origin, err)
		}
		if name == "" {
			named := ref.DockerReference()
			if named == nil {
				s.Close()
				return fmt.Errorf("app %s has no registry name for podman to run it by: give one as NAME=%s", origin, origin)
			}
			name = reference.TagNameOnly(named).String()
		}
		for _, other := range apps {
			if other.name != name {
				continue
			}
			s.Close()
			if other.src.digest == s.digest {
				return nil
			}
			return fmt.Errorf("%w: %s is both %s (%s) and %s (%s)", ErrAppClash, name, other.src.name, other.src.digest, s.name, s.digest)
		}
		apps = append(apps, app{name: name, src: s})
		return nil
	}
	for _, a := range opts.Apps {
		if err := add(a.Name, a.Ref, transports.ImageName(a.Ref)); err != nil {
			return apps, err
		}
	}
	declared, err := boundimages.DiscoverDir(treeRoot, opts.AppsDir)
	if err != nil {
		return apps, fmt.Errorf("base's %s: %w", opts.AppsDir, err)
	}
	for _, b := range declared {
		ref, err := store.ParseRegistryReference(b.Ref)
		if err != nil {
			return apps, fmt.Errorf("app %s (%s): %w", b.Ref, b.Entry, err)
		}
		if err := add(b.Ref, ref, b.Ref+" ("+b.Entry+")"); err != nil {
			return apps, err
		}
	}
	slices.SortFunc(apps, func(a, b app) int { return compareStrings(a.name, b.name) })
	return apps, nil
}

// mergeNames folds images with the same ID (one app under two names) into
// one record with both names.
func mergeNames(images []storeImage) ([]storeImage, error) {
	var out []storeImage
	for _, img := range images {
		i := slices.IndexFunc(out, func(o storeImage) bool { return o.cdigest == img.cdigest })
		if i < 0 {
			out = append(out, img)
			continue
		}
		if out[i].mdigest != img.mdigest {
			// Same config, different manifests (e.g. other compression):
			// one store image can keep one manifest only.
			return nil, fmt.Errorf("%w: %s and %s have the same image ID %s but different manifests", ErrAppClash,
				out[i].names[0], img.names[0], img.cdigest.Encoded())
		}
		out[i].names = append(out[i].names, img.names...)
		slices.Sort(out[i].names)
	}
	return out, nil
}

// configCreated is the app's creation time from its config (the epoch when
// it has none), recorded as the store image's creation time.
func configCreated(s *source) time.Time {
	m, err := s.configMap()
	if err != nil {
		return unixEpoch()
	}
	if c, ok := m["created"].(string); ok {
		if t, err := time.Parse(time.RFC3339Nano, c); err == nil {
			return t.UTC()
		}
	}
	return unixEpoch()
}

// checkFree fails with store.ErrInsufficientSpace when dir's filesystem
// has less than need bytes available.
func checkFree(dir string, need int64, what string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("checking free space in %s: %w", dir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if need > free {
		return fmt.Errorf("%w in %s for %s: it needs %s, %s available", store.ErrInsufficientSpace, dir, what,
			units.BytesSize(float64(need)), units.BytesSize(float64(free)))
	}
	return nil
}

// checkAppsFit refuses, before any app layer is written, the first app
// whose layers (as their manifests declare them, compressed) no longer fit.
func checkAppsFit(dir string, apps []app) error {
	var need int64
	seen := map[digest.Digest]bool{}
	for _, a := range apps {
		for _, l := range a.src.layers {
			if !seen[l.Digest] {
				seen[l.Digest] = true
				need += l.Size
			}
		}
		if err := checkFree(dir, need, "app "+a.name); err != nil {
			return fmt.Errorf("embedding %s: %w", a.name, err)
		}
	}
	return nil
}

// copyOut copies the finished layout to dest as it is (no recompression,
// so the blobs keep their digests) and returns the manifest digest.
func copyOut(ctx context.Context, sys *types.SystemContext, lay *layout, dest types.ImageReference) (digest.Digest, error) {
	src, err := lay.reference()
	if err != nil {
		return "", err
	}
	// The sources' signatures were checked when they were opened; the
	// layout is this process's own output.
	pc, err := signature.NewPolicyContext(&signature.Policy{Default: []signature.PolicyRequirement{signature.NewPRInsecureAcceptAnything()}})
	if err != nil {
		return "", err
	}
	defer pc.Destroy()
	destSys := *sys
	out, err := copy.Image(ctx, pc, dest, src, &copy.Options{SourceCtx: sys, DestinationCtx: &destSys, PreserveDigests: true})
	if err != nil {
		return "", fmt.Errorf("writing %s: %w", transports.ImageName(dest), err)
	}
	return manifest.Digest(out)
}
