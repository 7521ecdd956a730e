// Package sysroot knows where a host's bootstore state lives on disk and
// serialises the commands that change it.
//
// Lifecycle: a command resolves a Sysroot from --sysroot, takes the lock
// (Lock) if it mutates anything, cleans the leftovers of crashed runs
// (CleanTemp), works, and releases the lock. Readers such as `status` and
// `image list` never take the lock.
//
// Files owned here, relative to the sysroot:
//
//	ostree/bootc/storage/          the unified containers/storage graph root (pkg/store)
//	ostree/bootc/bootstore/lock    flock(2) held by the one mutating command
//	ostree/bootc/bootstore/tmp/    scratch space for big temporary files; emptied under the lock
//	run/bootstore/storage/         the store's run root when --sysroot is not "/"
//	/run/bootstore/storage/        the store's run root on a real host
package sysroot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Sysroot is the root of one host's filesystem: "/" on a real host, a
// directory in tests and during install.
type Sysroot struct {
	// Root is an absolute, cleaned path.
	Root string
}

// New returns the Sysroot at root, which is made absolute.
func New(root string) (*Sysroot, error) {
	if root == "" {
		root = "/"
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("resolving sysroot %q: %w", root, err)
	}
	return &Sysroot{Root: abs}, nil
}

// IsHostRoot reports whether this sysroot is the running system's "/".
func (s *Sysroot) IsHostRoot() bool { return s.Root == "/" }

// Path joins elems below the sysroot.
func (s *Sysroot) Path(elems ...string) string {
	return filepath.Join(append([]string{s.Root}, elems...)...)
}

// StorageRoot is the graph root of the unified containers/storage.
func (s *Sysroot) StorageRoot() string { return s.Path("ostree", "bootc", "storage") }

// StateDir holds bootstore's own files beside the store.
func (s *Sysroot) StateDir() string { return s.Path("ostree", "bootc", "bootstore") }

// TempDir is scratch space on the store's filesystem for big temporary files.
func (s *Sysroot) TempDir() string { return filepath.Join(s.StateDir(), "tmp") }

// RunRoot is the store's run root: /run/bootstore/storage on a real host,
// inside the sysroot otherwise so that tests never share state.
func (s *Sysroot) RunRoot() string { return s.Path("run", "bootstore", "storage") }

// ErrLocked is returned by TryLock when another command holds the lock.
var ErrLocked = errors.New("another bootstore command is changing this sysroot")

// Lock is a held sysroot lock.
type Lock struct {
	f *os.File
}

// Lock takes the sysroot's exclusive lock, waiting until ctx is done.
func (s *Sysroot) Lock(ctx context.Context) (*Lock, error) {
	for {
		l, err := s.TryLock()
		if !errors.Is(err, ErrLocked) {
			return l, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the lock on %s: %w", s.Root, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TryLock takes the sysroot's exclusive lock or fails at once with ErrLocked.
func (s *Sysroot) TryLock() (*Lock, error) {
	if err := os.MkdirAll(s.StateDir(), 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", s.StateDir(), err)
	}
	path := filepath.Join(s.StateDir(), "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// Unlock releases the lock. The kernel also releases it if the process dies.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// CleanTemp removes what crashed runs left in TempDir and recreates it
// empty. Call it only while holding the lock.
func (s *Sysroot) CleanTemp() error {
	dir := s.TempDir()
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing leftovers in %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	return nil
}
