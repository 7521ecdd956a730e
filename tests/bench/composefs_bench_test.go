package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/pkg/composefs"
	"github.com/bootstore/bootstore/tests/harness"
)

// BenchmarkComposefsDeploy compares a composefs deployment with a hardlink
// deployment and `ostree checkout -H` of the same big real tree: the OS image of
// BenchmarkDeployLargeTree (this machine's /usr/lib and /usr/share, one layer each,
// BOOTSTORE_BENCH_TREE to change), on one loop-mounted ext4. For each it prints
//
//   - the deploy time (bootstore: the time install prints, pull excluded; ostree: the
//     checkout, its commit not timed);
//   - the inodes and bytes the deployment took (statfs of the filesystem before and
//     after: hardlinks take no inode, directories and symlinks do; a composefs
//     deployment is its image and its /etc);
//   - `find DIR` and a read of every regular file ("cat", in Go) over the deployed
//     tree as it would be used: the composefs image mounted (erofs + overlayfs over the
//     store), the other trees as they are; cold (sync, then echo 3 >
//     /proc/sys/vm/drop_caches before each) and warm (right after).
//
// drop_caches empties the page cache of the whole machine: run it when that is
// acceptable. Nothing is asserted about times.
//
//	go test -run '^$' -bench ComposefsDeploy -benchtime 1x -timeout 60m -v ./tests/bench/
func BenchmarkComposefsDeploy(b *testing.B) {
	harness.RequireRoot(b)
	for _, c := range []string{"mkfs.ext4", "losetup", "ostree", "find"} {
		harness.RequireCommand(b, c)
	}
	bin := bootstoreBinary(b)
	reg := harness.StartRegistry(b)
	policy := harness.PolicyFile(b)
	treeDirs := strings.Split(envString("BOOTSTORE_BENCH_TREE", "/usr/lib:/usr/share"), ":")
	var extra []harness.Layer
	var tree harness.DirStats
	for _, d := range treeDirs {
		l, st := harness.DirLayer(b, d, d)
		extra = append(extra, l)
		tree.Entries += st.Entries
		tree.Bytes += st.Bytes
	}
	img := harness.OSImage(b, harness.OSImageOptions{Bootable: true, Version: "1", ExtraLayers: extra})
	layout := filepath.Join(b.TempDir(), "layout")
	if err := img.WriteOCILayout(layout, "latest"); err != nil {
		b.Fatal(err)
	}
	imageSize := layoutImageSize(b, layout, "latest")
	reg.PushOCI(b, layout, "latest", "tree:1", "gzip")
	os.RemoveAll(layout)
	ref := reg.Ref("tree:1")

	type row struct {
		name              string
		deploy            time.Duration
		inodes, bytes     int64
		entries           int
		findCold, catCold time.Duration
		findWarm, catWarm time.Duration
	}
	var rows []row
	ext4 := harness.LoopFS(b, 3*imageSize+(4<<30), harness.MkfsExt4...)
	usage := func() (inodes, bytes int64) {
		syncFS(b, ext4)
		var st unix.Statfs_t
		if err := unix.Statfs(ext4, &st); err != nil {
			b.Fatal(err)
		}
		return int64(st.Files - st.Ffree), int64(st.Blocks-st.Bfree) * st.Bsize
	}
	// reads times find and cat over dir, cold then warm.
	reads := func(r *row, dir string) {
		r.entries = countEntries(b, dir)
		buf := make([]byte, 1<<20)
		find := func() time.Duration { return timed(b, exec.Command("find", dir)) }
		cat := func() time.Duration {
			t0 := time.Now()
			if err := readTree(dir, buf); err != nil {
				b.Fatalf("reading %s: %v", dir, err)
			}
			return time.Since(t0)
		}
		dropCaches(b)
		r.findCold = find()
		dropCaches(b)
		r.catCold = cat()
		r.findWarm = find()
		r.catWarm = cat()
	}
	install := func(name string, args ...string) (*sysroot, row) {
		s := newSysroot(b, bin, filepath.Join(ext4, "sysroot-"+strings.ReplaceAll(name, " ", "-")), policy)
		s.pull(ref)
		settle(b, s.storage())
		i0, b0 := usage()
		out := s.install(ref, append([]string{"--experimental-unified-storage"}, args...)...)
		i1, b1 := usage()
		m := regexp.MustCompile(`(?m)^Deployed \d+ files, .* in ([0-9.]+)s`).FindStringSubmatch(out)
		if m == nil {
			b.Fatalf("install printed no Deployed line:\n%s", out)
		}
		sec, _ := strconv.ParseFloat(m[1], 64)
		return s, row{name: name, deploy: time.Duration(sec * float64(time.Second)), inodes: i1 - i0, bytes: b1 - b0}
	}
	for i := 0; i < b.N; i++ {
		rows = nil
		s, r := install("bootstore composefs", "--composefs")
		view := filepath.Join(b.TempDir(), "view")
		if err := os.Mkdir(view, 0o755); err != nil {
			b.Fatal(err)
		}
		err := composefs.Mount(filepath.Join(s.deployment(), ".bootstore.cfs"), view,
			composefs.MountOptions{DataRoot: filepath.Join(s.storage(), "overlay")})
		if err != nil {
			b.Fatal(err)
		}
		reads(&r, view)
		if err := unix.Unmount(view, 0); err != nil {
			b.Fatal(err)
		}
		rows = append(rows, r)
		s.remove()

		s, r = install("bootstore hardlink", "--copy-mode", "hardlink")
		dep := s.deployment()
		reads(&r, dep)
		rows = append(rows, r)

		repo := filepath.Join(ext4, "repo")
		if out, err := exec.Command("ostree", "--repo="+repo, "init", "--mode=bare").CombinedOutput(); err != nil {
			b.Fatalf("ostree init: %v\n%s", err, out)
		}
		out, err := exec.Command("ostree", "--repo="+repo, "commit", "--branch=bench", "--fsync=false", "--tree=dir="+dep).CombinedOutput()
		if err != nil {
			b.Fatalf("ostree commit: %v\n%s", err, out)
		}
		dst := filepath.Join(ext4, "checkout")
		settle(b, repo)
		i0, b0 := usage()
		d := timed(b, exec.Command("ostree", "--repo="+repo, "checkout", "-H", strings.TrimSpace(string(out)), dst))
		d += syncFS(b, ext4)
		i1, b1 := usage()
		r = row{name: "ostree checkout -H (+syncfs)", deploy: d, inodes: i1 - i0, bytes: b1 - b0}
		reads(&r, dst)
		rows = append(rows, r)
		removeAll(b, ext4, dst)
		removeAll(b, ext4, repo)
		s.remove()
	}
	fmt.Printf("deploy of %s: %d entries, %s, on ext4; one run each:\n", strings.Join(treeDirs, " + "), tree.Entries, mb(tree.Bytes))
	fmt.Printf("  %-30s %9s %9s %10s %9s %10s %10s %10s %10s\n", "step", "deploy(s)", "inodes", "bytes", "entries",
		"find cold", "cat cold", "find warm", "cat warm")
	for _, r := range rows {
		fmt.Printf("  %-30s %9.2f %9d %10s %9d %10.2f %10.2f %10.2f %10.2f\n", r.name, r.deploy.Seconds(), r.inodes, mb(r.bytes), r.entries,
			r.findCold.Seconds(), r.catCold.Seconds(), r.findWarm.Seconds(), r.catWarm.Seconds())
	}
}

// dropCaches writes back dirty data and drops the page, dentry and inode caches.
func dropCaches(b *testing.B) {
	b.Helper()
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		b.Fatalf("dropping caches: %v", err)
	}
}
