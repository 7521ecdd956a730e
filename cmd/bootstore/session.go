package main

import (
	"context"
	"fmt"
	"os"

	"github.com/bootstore/bootstore/pkg/boundimages"
	"github.com/bootstore/bootstore/pkg/store"
	"github.com/bootstore/bootstore/pkg/sysroot"
)

var (
	sysrootErrLocked = sysroot.ErrLocked
	boundErrInvalid  = boundimages.ErrInvalid
)

// session is an open sysroot and store for one command.
type session struct {
	root  *sysroot.Sysroot
	store *store.Store
	lock  *sysroot.Lock
}

// openSession opens the sysroot's store. A mutating session holds the
// sysroot lock and has emptied the scratch directory of crashed runs; a
// read-only one takes no lock and fails if there is no store yet.
func openSession(ctx context.Context, g *globalOptions, mutate bool) (*session, error) {
	root, err := sysroot.New(g.sysroot)
	if err != nil {
		return nil, err
	}
	sess := &session{root: root}
	if mutate {
		if sess.lock, err = root.TryLock(); err != nil {
			return nil, err
		}
		if err := root.CleanTemp(); err != nil {
			sess.Close()
			return nil, err
		}
	} else if !store.Exists(root.StorageRoot()) {
		return nil, fmt.Errorf("no bootstore store at %s (pull an image first)", root.StorageRoot())
	}
	sess.store, err = store.Open(ctx, store.Options{
		GraphRoot: root.StorageRoot(),
		RunRoot:   root.RunRoot(),
		TempDir:   root.TempDir(),
		Warn:      os.Stderr,
	})
	if err != nil {
		sess.Close()
		return nil, err
	}
	return sess, nil
}

// Close closes the store and releases the lock.
func (s *session) Close() {
	if s.store != nil {
		s.store.Close()
	}
	s.lock.Unlock()
}
