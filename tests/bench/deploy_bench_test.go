package bench

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootstore/bootstore/tests/harness"
)

// BenchmarkDeployLargeTree times writing a deployment of a big real tree: an OS image
// whose extra layers are this machine's /usr/lib and /usr/share (one layer each, over
// 100k entries, streamed from the host files by harness.DirLayer; sockets, fifos,
// devices and unreadable entries are left out), pushed with gzip to a local registry.
// In the same run, on loop-mounted filesystems (sparse files sized from the tree), it
// times:
//
//   - bootstore deploy by reflink (XFS), by hardlink (ext4) and by copy (ext4, with
//     `--copy-mode copy`): `bootstore install to-filesystem --experimental-unified-storage
//     --copy-mode M`, with the image pulled beforehand by `bootstore image pull` so that
//     install's own pull is a no-op; the time is the one install prints ("Deployed N
//     files, SIZE in X.XXs": writing the tree, /etc and /var fix-ups, the kernel, and the
//     syncfs before the final rename), so the pull is excluded;
//   - `ostree --repo=R checkout -H COMMIT DEST`, R a bare repository on the same ext4 into
//     which bootstore's hardlink deployment was committed (the commit is not timed);
//   - `cp -al`, `cp -a` (ext4) and `cp -a --reflink=always` (XFS) of that deployment tree
//     on the same filesystem.
//
// bootstore's deploy ends with syncfs, the other commands do not, so they are shown
// with and without a syncfs of the filesystem right after them, and the ratios use both.
// Page caches cannot be dropped reliably on a shared machine: every timed step runs once,
// warm, after sync(2), one plain read of all of its source (the store, the repository,
// the tree being copied) and sync(2) again, so sources are in memory and nothing is
// waiting to be written back. The load1 column is the 1-minute load average when a
// step started: on a shared machine it tells which figures competed for the CPUs.
// Nothing is asserted about times.
//
// Reproduce (root, xfsprogs, ostree, docker-registry; about 20 GB free in $TMPDIR for
// the sparse loop files, the OCI layout and the registry; about 8 minutes for 4.5 GB,
// 123k entries on 2 CPUs):
//
//	cd /work/main && go test -run '^$' -bench DeployLargeTree -benchtime 1x -timeout 60m -v ./tests/bench/
//
// BOOTSTORE_BENCH_TREE (default /usr/lib:/usr/share) names the host directories, one
// layer each; BOOTSTORE_BIN uses a prebuilt bootstore; BOOTSTORE_BENCH_PERF=DIR records
// a `perf record -g` profile of every timed step into DIR/<step>.perf.data (the times
// then include perf's overhead; bootstore's also its no-op pull).
func BenchmarkDeployLargeTree(b *testing.B) {
	harness.RequireRoot(b)
	for _, c := range []string{"mkfs.xfs", "mkfs.ext4", "losetup", "ostree", "cp"} {
		harness.RequireCommand(b, c)
	}
	perfDir := os.Getenv("BOOTSTORE_BENCH_PERF")
	if perfDir != "" {
		harness.RequireCommand(b, "perf")
		if err := os.MkdirAll(perfDir, 0o755); err != nil {
			b.Fatal(err)
		}
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
		tree.Files += st.Files
		tree.Dirs += st.Dirs
		tree.Symlinks += st.Symlinks
		tree.Hardlinks += st.Hardlinks
		tree.Bytes += st.Bytes
		tree.Skipped += st.Skipped
	}
	img := harness.OSImage(b, harness.OSImageOptions{Bootable: true, Version: "1", ExtraLayers: extra})
	start := time.Now()
	layout := filepath.Join(b.TempDir(), "layout")
	if err := img.WriteOCILayout(layout, "latest"); err != nil {
		b.Fatal(err)
	}
	imageSize := layoutImageSize(b, layout, "latest")
	reg.PushOCI(b, layout, "latest", "tree:1", "gzip")
	os.RemoveAll(layout)
	pushTime := time.Since(start)
	ref := reg.Ref("tree:1")
	fmt.Printf("image: %s (%s), %s uncompressed in %d layers; layout + gzip push %.0fs\n",
		strings.Join(treeDirs, " + "), tree, mb(imageSize), len(img.Layers), pushTime.Seconds())

	type row struct {
		name, fs    string
		cmd, synced time.Duration // synced: cmd + a syncfs right after (bootstore: the same)
		entries     int
		load        string // 1-minute load average when the step started
	}
	var rows []row
	var notes []string
	add := func(r row) {
		for i := range rows {
			if rows[i].name == r.name {
				rows[i].cmd += r.cmd
				rows[i].synced += r.synced
				return
			}
		}
		rows = append(rows, r)
	}
	// deploy pulls ref into a fresh sysroot, settles, installs with mode and returns
	// the sysroot.
	deploy := func(mnt, name, mode string) *sysroot {
		s := newSysroot(b, bin, filepath.Join(mnt, "sysroot-"+mode), policy)
		t0 := time.Now()
		s.pull(ref)
		pull := time.Since(t0)
		settle(b, s.storage())
		args := []string{"--experimental-unified-storage", "--copy-mode", mode}
		load := loadAvg()
		t0 = time.Now()
		var out string
		if perfDir != "" {
			argv := append(perfRecord(perfDir, name), append([]string{bin, "--sysroot", s.root},
				s.installArgs(ref, args...)...)...)
			out = s.exec(argv[0], argv[1:]...)
		} else {
			out = s.install(ref, args...)
		}
		wall := time.Since(t0)
		line, sec := deployed(b, out)
		d := time.Duration(sec * float64(time.Second))
		add(row{name: name, fs: fsName(mnt), cmd: d, synced: d, entries: countEntries(b, s.deployment()), load: load})
		notes = append(notes, fmt.Sprintf("%s: image pull %.1fs, install %.1fs wall; %s", name, pull.Seconds(), wall.Seconds(), line))
		return s
	}
	// other times a command writing dst from src on mnt, after settling src.
	other := func(mnt, name string, src []string, dst string, argv ...string) {
		settle(b, src...)
		if perfDir != "" {
			argv = append(perfRecord(perfDir, name), argv...)
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		load := loadAvg()
		d := timed(b, cmd)
		sy := syncFS(b, mnt)
		add(row{name: name, fs: fsName(mnt), cmd: d, synced: d + sy, entries: countEntries(b, dst), load: load})
	}

	xfsSize := 2*imageSize + (4 << 30)
	ext4Size := 3*imageSize + (4 << 30)
	for i := 0; i < b.N; i++ {
		// XFS: reflinks.
		xfs := harness.LoopFS(b, xfsSize, harness.MkfsXFSReflink...)
		s := deploy(xfs, "bootstore deploy, reflink", "reflink")
		dep := s.deployment()
		dst := filepath.Join(xfs, "cp-reflink")
		other(xfs, "cp -a --reflink=always", []string{dep}, dst, "cp", "-a", "--reflink=always", dep, dst)
		removeAll(b, xfs, dst)
		s.remove()

		// ext4: copies first (they take the most room), then hardlinks.
		ext4 := harness.LoopFS(b, ext4Size, harness.MkfsExt4...)
		s = deploy(ext4, "bootstore deploy, copy", "copy")
		s.remove()
		_ = exec.Command("fstrim", ext4).Run()
		s = deploy(ext4, "bootstore deploy, hardlink", "hardlink")
		dep = s.deployment()

		repo := filepath.Join(ext4, "repo")
		if out, err := exec.Command("ostree", "--repo="+repo, "init", "--mode=bare").CombinedOutput(); err != nil {
			b.Fatalf("ostree init: %v\n%s", err, out)
		}
		t0 := time.Now()
		out, err := exec.Command("ostree", "--repo="+repo, "commit", "--branch=bench", "--fsync=false",
			"--tree=dir="+dep).CombinedOutput()
		if err != nil {
			b.Fatalf("ostree commit: %v\n%s", err, out)
		}
		commit := strings.TrimSpace(string(out))
		notes = append(notes, fmt.Sprintf("ostree commit of the hardlink deployment into a bare repo: %.1fs (not timed below)", time.Since(t0).Seconds()))
		dst = filepath.Join(ext4, "ostree-checkout")
		other(ext4, "ostree checkout -H", []string{repo}, dst, "ostree", "--repo="+repo, "checkout", "-H", commit, dst)
		removeAll(b, ext4, dst)
		removeAll(b, ext4, repo)

		dst = filepath.Join(ext4, "cp-al")
		other(ext4, "cp -al", []string{dep}, dst, "cp", "-al", dep, dst)
		removeAll(b, ext4, dst)
		dst = filepath.Join(ext4, "cp-a")
		other(ext4, "cp -a", []string{dep}, dst, "cp", "-a", dep, dst)
		removeAll(b, ext4, dst)
		s.remove()
	}

	n := time.Duration(b.N)
	get := func(name string) row {
		for _, r := range rows {
			if r.name == name {
				r.cmd /= n
				r.synced /= n
				return r
			}
		}
		b.Fatalf("no row %q", name)
		return row{}
	}
	fmt.Printf("deploy of %s: %d entries, %s; one warm run each (mean of %d):\n",
		strings.Join(treeDirs, " + "), tree.Entries, mb(tree.Bytes), b.N)
	fmt.Printf("  %-30s %-5s %9s %12s %9s %6s\n", "step", "fs", "time (s)", "+syncfs (s)", "entries", "load1")
	for _, name := range []string{"bootstore deploy, reflink", "cp -a --reflink=always", "bootstore deploy, hardlink",
		"ostree checkout -H", "cp -al", "bootstore deploy, copy", "cp -a"} {
		r := get(name)
		syncCol := fmt.Sprintf("%12.2f", r.synced.Seconds())
		if strings.HasPrefix(r.name, "bootstore") {
			syncCol = fmt.Sprintf("%12s", "(included)")
		}
		fmt.Printf("  %-30s %-5s %9.2f %s %9d %6s\n", r.name, r.fs, r.cmd.Seconds(), syncCol, r.entries, r.load)
	}
	fmt.Printf("  ratios (bootstore / other; vs the other's time +syncfs, and vs its time alone):\n")
	for _, p := range [][3]string{
		{"bootstore deploy, hardlink", "ostree checkout -H", "hardlink/ostree-checkout-H"},
		{"bootstore deploy, hardlink", "cp -al", "hardlink/cp-al"},
		{"bootstore deploy, reflink", "cp -a --reflink=always", "reflink/cp-reflink"},
		{"bootstore deploy, copy", "cp -a", "copy/cp-a"},
	} {
		a, o := get(p[0]), get(p[1])
		fmt.Printf("  %-50s %6.2f %6.2f\n", p[0]+" / "+p[1], a.cmd.Seconds()/o.synced.Seconds(), a.cmd.Seconds()/o.cmd.Seconds())
		b.ReportMetric(a.cmd.Seconds()/o.synced.Seconds(), p[2])
	}
	for _, note := range notes {
		fmt.Printf("  %s\n", note)
	}
	if perfDir != "" {
		fmt.Printf("  perf profiles in %s (times above include perf's overhead)\n", perfDir)
	}
}

// countEntries counts the entries below dir (dir itself included).
func countEntries(b *testing.B, dir string) int {
	b.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(_ string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		b.Fatalf("counting %s: %v", dir, err)
	}
	return n
}

// fsName is the filesystem type of the mount at mnt ("xfs", "ext4").
func fsName(mnt string) string {
	out, err := exec.Command("findmnt", "-n", "-o", "FSTYPE", "--target", mnt).Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// loadAvg is the 1-minute load average (the machine may be shared; on 2 CPUs a load
// near 2 means the timed step competed for them).
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(data)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// perfRecord is the `perf record` prefix writing the profile of step into dir.
func perfRecord(dir, step string) []string {
	slug := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, strings.ToLower(step))
	return []string{"perf", "record", "-q", "--no-buildid", "-F", "999", "-g", "-o", filepath.Join(dir, slug+".perf.data"), "--"}
}
