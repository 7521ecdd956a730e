// Package store is the host's unified containers/storage: the one place the
// booted OS image, its logically bound images and anything podman runs from
// them are kept.
//
// Lifecycle: Open creates the store on first use (in a temporary directory
// that is renamed into place, so a crash never leaves a half-made store) and
// records the graph driver chosen then; Pull brings an image and its bound
// images in through containers/image; List reports what is there and who
// uses it; Close shuts the store down. Only bootstore writes the store;
// podman reads it as an additional image store (DESIGN.md invariant 7).
//
// Files owned here, inside the graph root:
//
//	bootstore.json   {"driver": "overlay"|"vfs", ...}: the driver chosen at creation
//
// and, per image, the big-data item BoundImagesKey recording the bound
// images a host image resolved to at pull time, by image ID.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.podman.io/storage"
	"go.podman.io/storage/drivers/overlay"
	"go.podman.io/storage/types"

	"github.com/bootstore/bootstore/pkg/sysroot"
)

// Drivers bootstore uses. Overlay is required for partial pulls and shares
// layer files with deployments; vfs is the fallback where the kernel or the
// backing filesystem cannot do overlay.
const (
	DriverOverlay = "overlay"
	DriverVFS     = "vfs"
)

const recordName = "bootstore.json"

// record is the store's own metadata, written once at creation.
type record struct {
	Driver  string    `json:"driver"`
	Created time.Time `json:"created"`
}

// Options says where the store lives.
type Options struct {
	// GraphRoot is the store's graph root, e.g. SYSROOT/ostree/bootc/storage.
	GraphRoot string
	// RunRoot holds the store's runtime state (mount counts, locks).
	RunRoot string
	// TempDir receives big temporary files while pulling; it must be on a
	// filesystem with room for a layer and is emptied by the caller after
	// crashes (sysroot.CleanTemp).
	TempDir string
	// Driver forces a graph driver when the store is created; "" chooses
	// overlay when the kernel allows it and vfs otherwise.
	Driver string
	// Warn receives human-readable warnings (e.g. the vfs fallback).
	Warn io.Writer
}

// Store is an open unified store.
type Store struct {
	s      storage.Store
	opts   Options
	driver string
	// created is set when this process created the store (and so already
	// warned about a vfs fallback); partialNote says the rest once.
	created     bool
	partialNote sync.Once
}

// Open opens the store at opts.GraphRoot, creating it if it does not exist.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Warn == nil {
		opts.Warn = io.Discard
	}
	rec, err := readRecord(opts.GraphRoot)
	created := false
	if errors.Is(err, os.ErrNotExist) {
		rec, err = create(ctx, opts)
		created = true
	}
	if err != nil {
		return nil, err
	}
	s, err := storage.GetStore(storeOptions(opts.GraphRoot, opts.RunRoot, rec.Driver))
	if err != nil {
		return nil, fmt.Errorf("opening store %s (driver %s): %w", opts.GraphRoot, rec.Driver, err)
	}
	return &Store{s: s, opts: opts, driver: rec.Driver, created: created}, nil
}

// Exists reports whether a store was created at graphRoot: its record
// exists (Open reports a damaged record, naming it).
func Exists(graphRoot string) bool {
	_, err := os.Lstat(filepath.Join(graphRoot, recordName))
	return err == nil
}

func readRecord(graphRoot string) (record, error) {
	var rec record
	data, err := os.ReadFile(filepath.Join(graphRoot, recordName))
	if err != nil {
		return rec, err
	}
	p := filepath.Join(graphRoot, recordName)
	// The record only says which driver the store uses; the hint tells how
	// to write it again by hand.
	repair := fmt.Sprintf(`the file is damaged: write {"driver":"overlay"} into it (or "vfs" if %s has a vfs directory and no overlay directory)`, graphRoot)
	if err := json.Unmarshal(data, &rec); err != nil {
		return rec, fmt.Errorf("reading %s: %w; %s", p, err, repair)
	}
	if rec.Driver != DriverOverlay && rec.Driver != DriverVFS {
		return rec, fmt.Errorf("%s records unknown driver %q; %s", p, rec.Driver, repair)
	}
	return rec, nil
}

func storeOptions(graphRoot, runRoot, driver string) types.StoreOptions {
	return types.StoreOptions{
		GraphRoot:       graphRoot,
		RunRoot:         runRoot,
		GraphDriverName: driver,
		// A layer is recorded as present only after its filesystem is
		// synced (syncfs). Without it a power cut can leave layers.json
		// naming a layer whose files, or the driver's link and lower
		// files, are empty: the boot test's power cut while an upgrade
		// was deploying left a store whose image no longer mounted
		// ("can't stat lower layer .../overlay/diff").
		// (containers/storage v1.64.2's vfs driver refuses its own
		// "vfs.sync" spelling, so vfs stores go without.)
		GraphDriverOptions: syncOptions(driver),
		PullOptions:        partialPullOptions(),
	}
}

func syncOptions(driver string) []string {
	if driver != DriverOverlay {
		return nil
	}
	return []string{"overlay.sync=filesystem"}
}

// create makes a new store in a temporary sibling of GraphRoot and renames
// it into place, so GraphRoot either does not exist or is complete.
func create(ctx context.Context, opts Options) (record, error) {
	parent := filepath.Dir(opts.GraphRoot)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return record{}, fmt.Errorf("creating %s: %w", parent, err)
	}
	if fi, err := os.Stat(opts.GraphRoot); err == nil && fi.IsDir() {
		entries, _ := os.ReadDir(opts.GraphRoot)
		if len(entries) > 0 {
			return record{}, fmt.Errorf("%s exists but holds no %s: not a bootstore store, refusing to touch it", opts.GraphRoot, recordName)
		}
		if err := os.Remove(opts.GraphRoot); err != nil {
			return record{}, fmt.Errorf("replacing empty %s: %w", opts.GraphRoot, err)
		}
	}
	removeStaleTemps(parent, filepath.Base(opts.GraphRoot))
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(opts.GraphRoot)+".tmp-")
	if err != nil {
		return record{}, fmt.Errorf("creating store: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	tmpRun, err := os.MkdirTemp(parent, "."+filepath.Base(opts.GraphRoot)+".tmprun-")
	if err != nil {
		return record{}, fmt.Errorf("creating store: %w", err)
	}
	defer os.RemoveAll(tmpRun)

	driver, err := initDriver(tmp, tmpRun, opts)
	if err != nil {
		return record{}, err
	}
	rec := record{Driver: driver, Created: time.Now().UTC()}
	data, _ := json.MarshalIndent(rec, "", "  ")
	if err := sysroot.WriteFileAtomic(filepath.Join(tmp, recordName), data, 0o600); err != nil {
		return record{}, err
	}
	if err := os.Chmod(tmp, 0o700); err != nil {
		return record{}, err
	}
	if err := os.Rename(tmp, opts.GraphRoot); err != nil {
		return record{}, fmt.Errorf("creating store %s: %w", opts.GraphRoot, err)
	}
	return rec, syncDir(parent)
}

// initDriver initialises the store in dir with the requested driver or, when
// none was requested, overlay with a loud fallback to vfs.
func initDriver(dir, runDir string, opts Options) (string, error) {
	try := func(driver string) error {
		s, err := storage.GetStore(storeOptions(dir, runDir, driver))
		if err != nil {
			return err
		}
		// GetStore is lazy: asking for the driver makes it probe the
		// filesystem (d_type, a test overlay mount).
		_, err = s.GraphDriver()
		if _, serr := s.Shutdown(true); err == nil {
			err = serr
		}
		return err
	}
	if opts.Driver != "" {
		if err := try(opts.Driver); err != nil {
			return "", fmt.Errorf("creating store %s with driver %s: %w", opts.GraphRoot, opts.Driver, err)
		}
		return opts.Driver, nil
	}
	// The overlay driver quietly switches to fuse-overlayfs where the kernel
	// cannot mount overlay on this filesystem; podman reading the store would
	// not know, and FUSE is no base for deployments, so ask for native
	// support first.
	err := errors.New("native overlayfs cannot be mounted on this filesystem (it needs d_type and overlay mounts)")
	if native, nerr := overlay.SupportsNativeOverlay(filepath.Join(dir, DriverOverlay), filepath.Join(runDir, DriverOverlay)); nerr != nil {
		err = nerr
	} else if native {
		if err = try(DriverOverlay); err == nil {
			return DriverOverlay, nil
		}
	}
	// Start the fallback from a clean directory: overlay may have left files.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(dir, e.Name()))
	}
	fmt.Fprintf(opts.Warn, "WARNING: the overlay driver is unavailable for %s (%v).\n"+
		"WARNING: falling back to vfs: every layer is a full copy, partial pulls (zstd:chunked, eStargz) are disabled\n"+
		"WARNING: and deployments cannot share files with the store by overlay. Put the store on a filesystem that\n"+
		"WARNING: supports overlay (xfs, ext4, btrfs) to avoid this.\n", opts.GraphRoot, err)
	if err := try(DriverVFS); err != nil {
		return "", fmt.Errorf("creating store %s with driver vfs: %w", opts.GraphRoot, err)
	}
	return DriverVFS, nil
}

// removeStaleTemps deletes temporary store directories a crashed creation
// left beside the graph root.
func removeStaleTemps(parent, base string) {
	for _, pattern := range []string{"." + base + ".tmp-*", "." + base + ".tmprun-*"} {
		matches, _ := filepath.Glob(filepath.Join(parent, pattern))
		for _, m := range matches {
			os.RemoveAll(m)
		}
	}
}

// Driver is the graph driver the store was created with.
func (s *Store) Driver() string { return s.driver }

// GraphRoot is the store's graph root.
func (s *Store) GraphRoot() string { return s.opts.GraphRoot }

// RunRoot is the store's run root.
func (s *Store) RunRoot() string { return s.opts.RunRoot }

// Storage exposes the underlying containers/storage store for packages that
// read layers (deploy) or remove them (gc).
func (s *Store) Storage() storage.Store { return s.s }

// Close shuts the store down, unmounting what this process mounted.
func (s *Store) Close() error {
	_, err := s.s.Shutdown(false)
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
