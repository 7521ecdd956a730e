package gc

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/bootstore/bootstore/pkg/store"
	"github.com/bootstore/bootstore/pkg/sysroot"
)

// Pin is an image the user keeps whatever else uses it. It is recorded by
// image ID; Name is what the user typed, for messages.
type Pin struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// pinsFile lists the pins: ostree/bootc/bootstore/pins.json.
func pinsFile(sr *sysroot.Sysroot) string { return filepath.Join(sr.StateDir(), "pins.json") }

// ReadPins returns the pinned images.
func ReadPins(sr *sysroot.Sysroot) ([]Pin, error) {
	data, err := os.ReadFile(pinsFile(sr))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var pins []Pin
	if err := json.Unmarshal(data, &pins); err != nil {
		return nil, fmt.Errorf("reading %s: %w", pinsFile(sr), err)
	}
	return pins, nil
}

func writePins(sr *sysroot.Sysroot, pins []Pin) error {
	data, err := json.MarshalIndent(pins, "", "  ")
	if err != nil {
		return err
	}
	return sysroot.WriteFileAtomic(pinsFile(sr), data, 0o644)
}

// PinImage pins the image name resolves to (a name or an ID) in the store.
// Call it under the sysroot lock.
func PinImage(sr *sysroot.Sysroot, st *store.Store, name string) (Pin, error) {
	id, err := st.ResolveImage(name)
	if err != nil {
		return Pin{}, err
	}
	pins, err := ReadPins(sr)
	if err != nil {
		return Pin{}, err
	}
	p := Pin{ID: id, Name: name}
	if !slices.ContainsFunc(pins, func(q Pin) bool { return q.ID == id }) {
		pins = append(pins, p)
	}
	return p, writePins(sr, pins)
}

// UnpinImage removes the pin of name (matched by the image it resolves to,
// or by the name or ID recorded in the pin when the image is gone).
func UnpinImage(sr *sysroot.Sysroot, st *store.Store, name string) (Pin, error) {
	pins, err := ReadPins(sr)
	if err != nil {
		return Pin{}, err
	}
	id, _ := st.ResolveImage(name)
	for i, p := range pins {
		if (id != "" && p.ID == id) || p.Name == name || p.ID == name {
			return p, writePins(sr, slices.Delete(pins, i, i+1))
		}
	}
	return Pin{}, fmt.Errorf("%s is not pinned", name)
}
