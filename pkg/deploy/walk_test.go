package deploy

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestWalkReportsTheOverlayView walks the oracle layers and checks every
// reported entry against the kernel's overlayfs view: the same paths, and
// for each path the providing layer's entry looks like the overlay's
// (type, mode, owner, size, device, mtime, target, content), with the
// overlay's xattrs and hardlink groups.
func TestWalkReportsTheOverlayView(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	sentinel := filepath.Join(dir, "sentinel")
	must(t, unix.Mkdir(sentinel, 0o755))
	layers := oracleLayers(t, dir, sentinel)
	mnt := filepath.Join(dir, "mnt")
	mountOverlay(t, layers, mnt)
	want := snapshot(t, mnt, false)
	var layerSnaps []map[string]entry
	for _, l := range layers {
		layerSnaps = append(layerSnaps, snapshot(t, l, false))
	}

	got := map[string]entry{}
	inodes := map[[2]uint64][]string{}
	var order []string
	err := Walk(context.Background(), layers, func(e *Entry) error {
		if _, ok := got[e.Path]; ok {
			return fmt.Errorf("%q reported twice", e.Path)
		}
		order = append(order, e.Path)
		le, ok := layerSnaps[e.Layer][e.Path]
		if !ok {
			return fmt.Errorf("%q: layer %d has no such path", e.Path, e.Layer)
		}
		if e.Stat.Mode&unix.S_IFMT != le.Type || e.Stat.Mode&0o7777 != le.Perm {
			t.Errorf("%q: stat mode %#o, the layer's entry %v", e.Path, e.Stat.Mode, le)
		}
		if le.Type == unix.S_IFLNK && e.Target != le.Target {
			t.Errorf("%q: target %q, want %q", e.Path, e.Target, le.Target)
		}
		var xs []string
		for _, x := range e.Xattrs {
			xs = append(xs, fmt.Sprintf("%s=%x", x.Name, x.Value))
		}
		sort.Strings(xs)
		le.Xattrs = strings.Join(xs, " ")
		if le.Type != unix.S_IFDIR {
			k := [2]uint64{e.Stat.Dev, e.Stat.Ino}
			inodes[k] = append(inodes[k], e.Path)
		}
		le.Group = ""
		got[e.Path] = le
		return nil
	})
	must(t, err)
	seen := map[string]bool{}
	for _, p := range order {
		if p != "/" && !seen[filepath.Dir(p)] {
			t.Errorf("%q reported before its directory", p)
		}
		seen[p] = true
	}
	for _, ps := range inodes {
		if len(ps) > 1 {
			sort.Strings(ps)
			for _, p := range ps {
				e := got[p]
				e.Group = ps[0]
				got[p] = e
			}
		}
	}
	diffTrees(t, "overlay", want, "walk", got)
	if len(got) < 40 {
		t.Fatalf("walked only %d paths", len(got))
	}
}
