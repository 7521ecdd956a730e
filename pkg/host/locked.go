package host

import (
	"github.com/bootstore/bootstore/pkg/sysroot"
)

// lockAndLoad takes the sysroot lock, empties the scratch directory of
// crashed runs, and reads the state. The caller unlocks.
func lockAndLoad(sr *sysroot.Sysroot) (*sysroot.Lock, *sysroot.State, error) {
	lock, err := sr.TryLock()
	if err != nil {
		return nil, nil, err
	}
	if err := sr.CleanTemp(); err != nil {
		lock.Unlock()
		return nil, nil, err
	}
	state, err := sr.Load()
	if err != nil {
		lock.Unlock()
		return nil, nil, err
	}
	return lock, state, nil
}

// lockBooted is lockAndLoad for commands that need a booted deployment.
func lockBooted(sr *sysroot.Sysroot) (*sysroot.Lock, *sysroot.State, *sysroot.Deployment, error) {
	lock, state, err := lockAndLoad(sr)
	if err != nil {
		return nil, nil, nil, err
	}
	booted := state.BootedDeployment()
	if booted == nil {
		lock.Unlock()
		return nil, nil, nil, ErrNotBooted
	}
	return lock, state, booted, nil
}
