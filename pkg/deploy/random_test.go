package deploy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOracleRandom compares Build with overlayfs on random layer stacks in
// which the same few names collide across layers as every kind of entry.
func TestOracleRandom(t *testing.T) {
	requireRoot(t)
	seeds := 40
	if testing.Short() {
		seeds = 5
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(seed), 1))
			dir := t.TempDir()
			var ls []layer
			var roots []string
			for i := range 2 + r.IntN(4) {
				l := newLayer(t, dir, fmt.Sprintf("L%d", i))
				randomLayer(t, r, l)
				ls = append(ls, l)
				roots = append(roots, l.root)
			}
			stampTimes(t, ls...)
			mnt := filepath.Join(dir, "mnt")
			mountOverlay(t, roots, mnt)
			opts := Options{Workers: 1 + r.IntN(4)}
			if seed%2 == 1 {
				opts.Cloner = &linkCloner{}
			}
			dst := filepath.Join(dir, "dst")
			res, err := Build(context.Background(), roots, dst, opts)
			must(t, err)
			got := snapshot(t, dst, true)
			diffTrees(t, "overlay", snapshot(t, mnt, false), "deploy", got)
			checkCounts(t, got, res)
		})
	}
}

// randomLayer fills l with entries on paths made of a few colliding names.
func randomLayer(t *testing.T, r *rand.Rand, l layer) {
	t.Helper()
	names := []string{"a", "b", "c", "etc"}
	var files []string
	for range 40 {
		var comps []string
		for range 1 + r.IntN(3) {
			comps = append(comps, names[r.IntN(len(names))])
		}
		p := strings.Join(comps, "/")
		if !parentsAreDirs(l, comps) {
			continue
		}
		if _, err := os.Lstat(l.p(p)); err == nil {
			continue
		}
		id := r.IntN(3)
		switch r.IntN(8) {
		case 0, 1:
			l.file(p, fmt.Sprintf("%s %d", p, r.IntN(3))).own(p, id, id, []uint32{0o644, 0o4755, 0o600}[id])
			files = append(files, p)
		case 2:
			l.dir(p, 0o755).own(p, id, 0, []uint32{0o755, 0o1777, 0o700}[id])
		case 3:
			l.whiteout(p)
		case 4:
			l.dir(p, 0o755).opaque(p).xattr(p, "user.x", p)
		case 5:
			l.symlink(p, names[r.IntN(len(names))])
		case 6:
			// Hardlinks stay on one side of /etc (see TestHardlinkAcrossMutablePrefix).
			if len(files) > 0 {
				if src := files[r.IntN(len(files))]; (comps[0] == "etc") == (strings.Split(src, "/")[0] == "etc") {
					l.link(l.p(src), p)
				}
			}
		case 7:
			l.file(p, "")
			files = append(files, p)
		}
	}
}

// parentsAreDirs reports whether every proper prefix of comps is a real
// directory in l or absent, so that creating the path follows no symlink.
func parentsAreDirs(l layer, comps []string) bool {
	for i := 1; i < len(comps); i++ {
		fi, err := os.Lstat(l.p(filepath.Join(comps[:i]...)))
		if err == nil && !fi.IsDir() {
			return false
		}
	}
	return true
}
