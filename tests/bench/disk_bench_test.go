package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/bootstore/bootstore/tests/harness"
)

// BenchmarkDiskUsage measures what a host holds per byte of its OS image: the disk-usage
// ratio (bytes used by the store + the deployment) / (uncompressed image size), from
// statfs (total - free blocks, after syncfs) before and after, on a fresh loop-mounted
// filesystem per case:
//
//   - unified, XFS: `install to-filesystem --experimental-unified-storage` (reflinks);
//   - unified, ext4: the same on ext4 (hardlinks);
//   - split + image pull: `install to-filesystem` without --experimental-unified-storage
//     (the deployment is a copy, the image is not kept), then `bootstore image pull` of
//     the same image: what a bootc host holds that also `podman pull`s its booted image.
//     On ext4 and on XFS (where the split copy uses copy_file_range, which XFS turns into
//     reflinks of the temporary store that is then dropped, so it is still a copy).
//
// For the unified cases the image is pulled first (`image pull`, then measured: the
// store) and then installed (the deployment); for the split ones the install comes
// first (the deployment) and then the pull (the store). The image is an OSImage with
// harness.BigImage(200 MB, 5000 files) as extra layers, pushed with gzip to a local
// registry. Its uncompressed size is the sum of its uncompressed layer tars (what
// `podman images` shows), tar headers included. The target stated in the issue is
// unified <= 1.05, split about 2.0. Nothing is asserted but that ratios are positive.
//
// "ratio" is the steady state: XFS keeps speculative preallocations (post-EOF blocks,
// copy-on-write fork reservations after copy_file_range/reflinked writes) for minutes,
// so before each reading they are given back with `xfs_spaceman -c 'prealloc -s'`;
// "ratio as written" is what each step had added right after it finished. The "floor"
// row is every file once in whole 4 KiB blocks: no filesystem copy is smaller. Note
// that ext4 preallocates its inode tables at mkfs, so new inodes cost nothing there,
// while XFS allocates them (512 bytes each) as files are made.
//
// Reproduce (root, xfsprogs, docker-registry; about 30 seconds):
//
//	cd /work/main && go test -run '^$' -bench DiskUsage -benchtime 1x -timeout 60m -v ./tests/bench/
//
// BOOTSTORE_BENCH_MB and BOOTSTORE_BENCH_FILES change the image; BOOTSTORE_BIN uses a
// prebuilt bootstore instead of building this module's.
func BenchmarkDiskUsage(b *testing.B) {
	harness.RequireRoot(b)
	for _, c := range []string{"mkfs.xfs", "mkfs.ext4", "losetup"} {
		harness.RequireCommand(b, c)
	}
	bin := bootstoreBinary(b)
	reg := harness.StartRegistry(b)
	size, files := int64(envInt("BOOTSTORE_BENCH_MB", 200))<<20, envInt("BOOTSTORE_BENCH_FILES", 5000)
	img := harness.OSImage(b, harness.OSImageOptions{Bootable: true, Version: "1",
		ExtraLayers: harness.BigImage(b, size, files, 1).Layers})
	layout := filepath.Join(b.TempDir(), "layout")
	if err := img.WriteOCILayout(layout, "latest"); err != nil {
		b.Fatal(err)
	}
	imageSize := layoutImageSize(b, layout, "latest")
	reg.PushOCI(b, layout, "latest", "disk:1", "gzip")
	os.RemoveAll(layout)
	ref := reg.Ref("disk:1")
	policy := harness.PolicyFile(b)
	fsSize := max(2<<30, 4*imageSize+(512<<20))

	cases := []struct {
		name, metric string
		mkfs         []string
		split        bool
	}{
		{"unified, XFS (reflink)", "unified-xfs-ratio", harness.MkfsXFSReflink, false},
		{"unified, ext4 (hardlink)", "unified-ext4-ratio", harness.MkfsExt4, false},
		{"split + image pull, ext4", "split-ext4-ratio", harness.MkfsExt4, true},
		{"split + image pull, XFS", "split-xfs-ratio", harness.MkfsXFSReflink, true},
	}
	// store and deploy are the settled growth of their steps (see settledUsedBytes);
	// written is the sum of what each step had added right after it finished.
	type usage struct{ store, deploy, written int64 }
	sums := make([]usage, len(cases))
	lines := make([]string, len(cases))
	for i := 0; i < b.N; i++ {
		for ci, c := range cases {
			mnt := harness.LoopFS(b, fsSize, c.mkfs...)
			s := newSysroot(b, bin, filepath.Join(mnt, "sysroot"), policy)
			before := settledUsedBytes(b, mnt)
			// step runs f and returns its raw and its settled growth.
			step := func(f func()) (raw, settled int64) {
				start := usedBytes(b, mnt)
				f()
				raw = usedBytes(b, mnt) - start
				return raw, settledUsedBytes(b, mnt) - start
			}
			pull := func() { s.pull(ref) }
			var u usage
			if c.split {
				r1, d := step(func() { lines[ci], _ = deployed(b, s.install(ref)) })
				r2, st := step(pull)
				u = usage{store: st, deploy: d, written: r1 + r2}
			} else {
				r1, st := step(pull)
				r2, d := step(func() { lines[ci], _ = deployed(b, s.install(ref, "--experimental-unified-storage")) })
				u = usage{store: st, deploy: d, written: r1 + r2}
			}
			if total := settledUsedBytes(b, mnt) - before; total != u.store+u.deploy {
				fmt.Printf("  (%s: steps add up to %d bytes, the whole run to %d)\n", c.name, u.store+u.deploy, total)
			}
			sums[ci].store += u.store
			sums[ci].deploy += u.deploy
			sums[ci].written += u.written
			s.remove()
		}
	}
	n := int64(b.N)
	fmt.Printf("disk usage of an OS image of %s uncompressed (%d layers; %d files, %s of file data; gzip in a local registry), mean of %d:\n",
		mb(imageSize), len(img.Layers), files, mb(size), b.N)
	fmt.Printf("  %-26s %11s %11s %11s %7s %16s\n", "case", "store", "deployment", "total", "ratio", "ratio as written")
	for ci, c := range cases {
		st, dep, wr := sums[ci].store/n, sums[ci].deploy/n, sums[ci].written/n
		ratio := float64(st+dep) / float64(imageSize)
		fmt.Printf("  %-26s %11s %11s %11s %7.3f %16.3f\n", c.name, mb(st), mb(dep), mb(st+dep), ratio, float64(wr)/float64(imageSize))
		if ratio <= 0 {
			b.Errorf("%s: ratio %.3f is not positive", c.name, ratio)
		}
		b.ReportMetric(ratio, c.metric)
	}
	fmt.Printf("  %-26s %11s %11s %11s %7.3f   (every file once, in whole 4 KiB blocks, no metadata)\n",
		"floor: one copy", "", "", mb(blockFloor(img)), float64(blockFloor(img))/float64(imageSize))
	fmt.Printf("  ratio = (store + deployment) / uncompressed image size, settled (XFS speculative preallocation given back);\n")
	fmt.Printf("  as written = right after each step. Target: unified <= 1.05, split ~ 2.0\n")
	for ci, c := range cases {
		fmt.Printf("  %s: %s\n", c.name, lines[ci])
	}
}

// blockFloor is the size of every regular file of img (the last layer's version of
// each path) rounded up to 4 KiB blocks: what any one on-disk copy of its data takes.
func blockFloor(img harness.Image) int64 {
	sizes := map[string]int64{}
	for _, l := range img.Layers {
		for _, e := range l {
			p := filepath.Clean("/" + e.Path)
			switch e.Type {
			case harness.File:
				n := int64(len(e.Data))
				if e.Content != nil {
					n = e.Size
				}
				sizes[p] = (n + 4095) &^ 4095
			default:
				delete(sizes, p)
			}
		}
	}
	var total int64
	for _, n := range sizes {
		total += n
	}
	return total
}
