package fsclone_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bootstore/bootstore/pkg/fsclone"
	"golang.org/x/sys/unix"
)

// writeRandom writes size pseudo-random bytes (seeded by path) to path and
// returns them.
func writeRandom(t testing.TB, path string, size int) []byte {
	t.Helper()
	var seed [32]byte
	copy(seed[:], path)
	data := make([]byte, size)
	rand.NewChaCha8(seed).Read(data)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return data
}

func stat(t testing.TB, path string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

func assertContent(t testing.TB, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: content differs from the source (%d bytes, want %d)", path, len(got), len(want))
	}
}

func clone(t testing.TB, c *fsclone.Cloner, src, dst string, shared bool, want fsclone.Method) {
	t.Helper()
	got, err := c.Clone(src, dst, shared)
	if err != nil {
		t.Fatalf("Clone(%s, %s, shared=%v): %v", src, dst, shared, err)
	}
	if got != want {
		t.Fatalf("Clone(%s, %s, shared=%v) used %s, want %s", src, dst, shared, got, want)
	}
}

func shares(t testing.TB, a, b string) bool {
	t.Helper()
	ok, err := fsclone.SharesExtents(a, b)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func mkdir(t testing.TB, elems ...string) string {
	t.Helper()
	dir := filepath.Join(elems...)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestParseMode(t *testing.T) {
	for _, m := range []fsclone.Mode{fsclone.Auto, fsclone.Reflink, fsclone.Hardlink, fsclone.Copy} {
		got, err := fsclone.ParseMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", m.String(), got, err, m)
		}
	}
	if got, err := fsclone.ParseMode("RefLink"); err != nil || got != fsclone.Reflink {
		t.Errorf("ParseMode(RefLink) = %v, %v", got, err)
	}
	for _, bad := range []string{"", "symlink", "auto "} {
		if _, err := fsclone.ParseMode(bad); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("ParseMode(%q): error %v, want one naming the input", bad, err)
		}
	}
	if s := fsclone.Mode(9).String(); s != "Mode(9)" {
		t.Errorf("Mode(9).String() = %q", s)
	}
	if s := fsclone.MethodHardlink.String(); s != "hardlink" {
		t.Errorf("MethodHardlink.String() = %q", s)
	}
}

func TestStatsString(t *testing.T) {
	var s fsclone.Stats
	s.Files[fsclone.MethodReflink], s.Bytes[fsclone.MethodReflink] = 120, 30_200_000
	s.Files[fsclone.MethodCopy], s.Bytes[fsclone.MethodCopy] = 3, 1100
	if got, want := s.String(), "reflink 120 files 30.2MB, hardlink 0, copy 3 files 1.1kB"; got != want {
		t.Errorf("Stats.String() = %q, want %q", got, want)
	}
	s = fsclone.Stats{}
	s.Files[fsclone.MethodHardlink], s.Bytes[fsclone.MethodHardlink] = 1, 10
	if got, want := s.String(), "reflink 0, hardlink 1 file 10B, copy 0"; got != want {
		t.Errorf("Stats.String() = %q, want %q", got, want)
	}
}

// TestCloneBadInput runs in a plain temporary directory: no root needed.
func TestCloneBadInput(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	data := writeRandom(t, src, 10000)
	c := fsclone.New(fsclone.Auto)

	dst := filepath.Join(dir, "dst")
	if _, err := c.Clone(src, dst, false); err != nil {
		t.Fatal(err)
	}
	assertContent(t, dst, data)
	if perm := stat(t, dst).Mode & 0o7777; perm != 0o600 {
		t.Errorf("%s has mode %o, want 0600", dst, perm)
	}

	for _, mode := range []fsclone.Mode{fsclone.Auto, fsclone.Reflink, fsclone.Hardlink, fsclone.Copy} {
		c := fsclone.New(mode)
		// dst exists.
		_, err := c.Clone(src, dst, true)
		if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), src) || !strings.Contains(err.Error(), dst) {
			t.Errorf("%s: cloning onto an existing file: %v, want ErrExist naming both paths", mode, err)
		}
		assertContent(t, dst, data)
	}

	if err := os.Symlink(src, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"missing", "link", "fifo", "."} {
		src := filepath.Join(dir, bad)
		dst := filepath.Join(dir, "out-"+bad)
		done := make(chan error)
		go func() { _, err := c.Clone(src, dst, true); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), src) {
				t.Errorf("Clone(%s): %v, want an error naming it", bad, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Clone(%s) hangs", bad)
		}
		if _, err := os.Lstat(dst); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Clone(%s) left %s behind", bad, dst)
		}
	}
	if _, err := fsclone.New(fsclone.Mode(9)).Clone(src, filepath.Join(dir, "bad-mode"), true); err == nil {
		t.Errorf("Clone with Mode(9) succeeded")
	}
	if s := c.Stats(); s.Files != [3]int64{0, 0, 1} {
		t.Errorf("failed clones were counted: %v", s)
	}
}

func TestXFSReflink(t *testing.T) {
	mnt := mountFS(t, "xfs")
	src := filepath.Join(mkdir(t, mnt, "store"), "file")
	data := writeRandom(t, src, 1<<20)
	dstDir := mkdir(t, mnt, "deploy")

	c := fsclone.New(fsclone.Auto)
	caps, err := c.Probe(filepath.Dir(src), dstDir)
	if err != nil {
		t.Fatal(err)
	}
	if caps != (fsclone.Capabilities{Reflink: true, Hardlink: true}) {
		t.Errorf("Probe on one XFS = %+v, want reflink and hardlink", caps)
	}
	if leftovers, _ := os.ReadDir(filepath.Dir(src)); len(leftovers) != 1 {
		t.Errorf("Probe left files behind in the source directory: %v", leftovers)
	}

	for _, shared := range []bool{true, false} {
		dst := filepath.Join(dstDir, fmt.Sprint("shared-", shared))
		clone(t, c, src, dst, shared, fsclone.MethodReflink)
		assertContent(t, dst, data)
		if stat(t, dst).Ino == stat(t, src).Ino {
			t.Errorf("a reflink is the source inode")
		}
		if !shares(t, src, dst) {
			t.Errorf("SharesExtents(%s, %s) = false after a reflink", src, dst)
		}

		// Writing the clone leaves the source as it was.
		f, err := os.OpenFile(dst, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xAA}, 8192), 4096); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		assertContent(t, src, data)
	}

	// Two files written separately share nothing.
	other := filepath.Join(dstDir, "other")
	writeRandom(t, other, 1<<20)
	if shares(t, src, other) {
		t.Errorf("SharesExtents of two independent files = true")
	}
}

func TestExt4(t *testing.T) {
	mnt := mountFS(t, "ext4")
	src := filepath.Join(mkdir(t, mnt, "store"), "file")
	data := writeRandom(t, src, 300<<10)
	dstDir := mkdir(t, mnt, "deploy")

	c := fsclone.New(fsclone.Auto)
	caps, err := c.Probe(filepath.Dir(src), dstDir)
	if err != nil {
		t.Fatal(err)
	}
	if caps != (fsclone.Capabilities{Reflink: false, Hardlink: true}) {
		t.Errorf("Probe on one ext4 = %+v, want hardlink only", caps)
	}

	hard := filepath.Join(dstDir, "usr-file")
	clone(t, c, src, hard, true, fsclone.MethodHardlink)
	if stat(t, hard).Ino != stat(t, src).Ino {
		t.Errorf("a hardlink is not the source inode")
	}

	cp := filepath.Join(dstDir, "etc-file")
	clone(t, c, src, cp, false, fsclone.MethodCopy)
	if stat(t, cp).Ino == stat(t, src).Ino {
		t.Errorf("a copy is the source inode")
	}
	assertContent(t, cp, data)
	if shares(t, src, cp) {
		t.Errorf("SharesExtents of a copy on ext4 = true")
	}

	// Explicit reflink on ext4: an error naming both paths, nothing left.
	rc := fsclone.New(fsclone.Reflink)
	dst := filepath.Join(dstDir, "reflinked")
	_, err = rc.Clone(src, dst, true)
	if !errors.Is(err, fsclone.ErrUnsupported) || !errors.Is(err, errors.ErrUnsupported) ||
		!strings.Contains(err.Error(), src) || !strings.Contains(err.Error(), dst) {
		t.Errorf("Mode reflink on ext4: %v, want ErrUnsupported naming %s and %s", err, src, dst)
	}
	t.Logf("Mode reflink on ext4: %v", err)
	if _, err := os.Lstat(dst); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failed reflink left %s behind", dst)
	}

	// Mode hardlink copies what must not share an inode.
	hc := fsclone.New(fsclone.Hardlink)
	clone(t, hc, src, filepath.Join(dstDir, "h-shared"), true, fsclone.MethodHardlink)
	clone(t, hc, src, filepath.Join(dstDir, "h-private"), false, fsclone.MethodCopy)
}

func TestAcrossFilesystems(t *testing.T) {
	xfs, ext4 := mountFS(t, "xfs"), mountFS(t, "ext4")
	src := filepath.Join(xfs, "file")
	data := writeRandom(t, src, 200<<10)

	c := fsclone.New(fsclone.Auto)
	caps, err := c.Probe(xfs, ext4)
	if err != nil {
		t.Fatal(err)
	}
	if caps != (fsclone.Capabilities{}) {
		t.Errorf("Probe XFS to ext4 = %+v, want nothing", caps)
	}
	for _, shared := range []bool{true, false} {
		dst := filepath.Join(ext4, fmt.Sprint("shared-", shared))
		clone(t, c, src, dst, shared, fsclone.MethodCopy)
		assertContent(t, dst, data)
	}

	for _, mode := range []fsclone.Mode{fsclone.Reflink, fsclone.Hardlink} {
		dst := filepath.Join(ext4, mode.String())
		_, err := fsclone.New(mode).Clone(src, dst, true)
		if !errors.Is(err, fsclone.ErrUnsupported) || !strings.Contains(err.Error(), src) || !strings.Contains(err.Error(), dst) {
			t.Errorf("Mode %s across filesystems: %v, want ErrUnsupported naming both paths", mode, err)
		}
		t.Logf("Mode %s across filesystems: %v", mode, err)
		if _, err := os.Lstat(dst); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("failed %s left %s behind", mode, dst)
		}
	}
}

// TestCopyModeOnXFS documents what the kernel does with copy_file_range on a
// reflink filesystem: it may share extents, and the copy is independent.
func TestCopyModeOnXFS(t *testing.T) {
	mnt := mountFS(t, "xfs")
	src := filepath.Join(mnt, "src")
	data := writeRandom(t, src, 1<<20)
	dst := filepath.Join(mnt, "dst")
	clone(t, fsclone.New(fsclone.Copy), src, dst, true, fsclone.MethodCopy)
	assertContent(t, dst, data)
	t.Logf("Mode copy on XFS: SharesExtents = %v (copy_file_range may reflink)", shares(t, src, dst))
	if err := os.WriteFile(dst, []byte("rewritten"), 0o600); err != nil {
		t.Fatal(err)
	}
	assertContent(t, src, data)
}

func TestStats(t *testing.T) {
	xfs, ext4 := mountFS(t, "xfs"), mountFS(t, "ext4")
	c := fsclone.New(fsclone.Auto)
	var want fsclone.Stats
	add := func(m fsclone.Method, n int64) {
		want.Files[m]++
		want.Bytes[m] += n
	}
	sizes := []int{0, 1, 4096, 100_000}
	for i, size := range sizes {
		xsrc := filepath.Join(xfs, fmt.Sprint("src", i))
		esrc := filepath.Join(ext4, fmt.Sprint("src", i))
		writeRandom(t, xsrc, size)
		writeRandom(t, esrc, size)

		clone(t, c, xsrc, filepath.Join(xfs, fmt.Sprint("reflink", i)), true, fsclone.MethodReflink)
		add(fsclone.MethodReflink, int64(size))
		clone(t, c, esrc, filepath.Join(ext4, fmt.Sprint("hardlink", i)), true, fsclone.MethodHardlink)
		add(fsclone.MethodHardlink, int64(size))
		clone(t, c, esrc, filepath.Join(ext4, fmt.Sprint("copy", i)), false, fsclone.MethodCopy)
		add(fsclone.MethodCopy, int64(size))
		clone(t, c, xsrc, filepath.Join(ext4, fmt.Sprint("xcopy", i)), true, fsclone.MethodCopy)
		add(fsclone.MethodCopy, int64(size))
	}
	if got := c.Stats(); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
	t.Logf("Stats: %v", c.Stats())
}

// TestSparseCopy copies a 1GB file holding 4KB of data (at its start and
// its end, hole between), within ext4 and from XFS to ext4, and checks
// that the copy is as sparse as the source.
func TestSparseCopy(t *testing.T) {
	xfs, ext4 := mountFS(t, "xfs"), mountFS(t, "ext4")
	const size = 1 << 30
	block := bytes.Repeat([]byte("data"), 512) // 2KB
	for _, tc := range []struct {
		name     string
		src, dst string
	}{
		{"ext4", filepath.Join(ext4, "sparse"), filepath.Join(ext4, "sparse-copy")},
		{"xfs-to-ext4", filepath.Join(xfs, "sparse"), filepath.Join(ext4, "sparse-copy-from-xfs")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := os.Create(tc.src)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(block, 0); err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(block, size-int64(len(block))); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			clone(t, fsclone.New(fsclone.Auto), tc.src, tc.dst, false, fsclone.MethodCopy)
			took := time.Since(start)
			st := stat(t, tc.dst)
			if st.Size != size {
				t.Errorf("copy has size %d, want %d", st.Size, size)
			}
			if used := st.Blocks * 512; used > 1<<20 {
				t.Errorf("copy of a sparse file uses %d bytes on disk, want under 1MB", used)
			}
			t.Logf("1GB sparse copy took %v, %d bytes on disk", took, st.Blocks*512)
			got, err := os.Open(tc.dst)
			if err != nil {
				t.Fatal(err)
			}
			defer got.Close()
			buf := make([]byte, 3*len(block))
			for _, off := range []int64{0, size - int64(len(buf))} {
				if _, err := got.ReadAt(buf, off); err != nil {
					t.Fatal(err)
				}
				want := append(block, make([]byte, 2*len(block))...)
				if off != 0 {
					want = append(make([]byte, 2*len(block)), block...)
				}
				if !bytes.Equal(buf, want) {
					t.Errorf("copy differs at offset %d", off)
				}
			}
		})
	}
}

// TestConcurrentClone clones from many goroutines through one Cloner (run
// with -race).
func TestConcurrentClone(t *testing.T) {
	xfs, ext4 := mountFS(t, "xfs"), mountFS(t, "ext4")
	const workers, perWorker = 8, 50
	srcs := map[string]string{"xfs": filepath.Join(xfs, "src"), "ext4": filepath.Join(ext4, "src")}
	for _, src := range srcs {
		writeRandom(t, src, 8192)
	}
	c := fsclone.New(fsclone.Auto)
	var want [3]int64
	method := func(i int) (src, dir string, shared bool, m fsclone.Method) {
		switch {
		case i%2 == 0:
			return srcs["xfs"], xfs, true, fsclone.MethodReflink
		case i%4 == 1:
			return srcs["ext4"], ext4, true, fsclone.MethodHardlink
		default:
			return srcs["ext4"], ext4, false, fsclone.MethodCopy
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		for i := range perWorker {
			_, _, _, m := method(i)
			want[m]++
		}
		wg.Go(func() {
			for i := range perWorker {
				src, dir, shared, m := method(i)
				got, err := c.Clone(src, filepath.Join(dir, fmt.Sprintf("%d-%d", w, i)), shared)
				if err == nil && got != m {
					err = fmt.Errorf("clone %d-%d used %s, want %s", w, i, got, m)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	s := c.Stats()
	if s.Files != want {
		t.Errorf("Stats().Files = %v, want %v", s.Files, want)
	}
	t.Logf("Stats: %v", s)
}

// BenchmarkClone clones 1000 files of 64KB per operation on one XFS with
// each mode, and copies them from that XFS to an ext4 for comparison: on
// one XFS "copy" is copy_file_range, which the kernel turns into a reflink.
func BenchmarkClone(b *testing.B) {
	const files, size = 1000, 64 << 10
	xfs, ext4 := mountFS(b, "xfs"), mountFS(b, "ext4")
	srcDir := mkdir(b, xfs, "store")
	for i := range files {
		writeRandom(b, filepath.Join(srcDir, fmt.Sprint(i)), size)
	}
	for _, bc := range []struct {
		name string
		mode fsclone.Mode
		dst  string
	}{
		{"reflink", fsclone.Reflink, xfs},
		{"hardlink", fsclone.Hardlink, xfs},
		{"copy", fsclone.Copy, xfs},
		{"copy-xfs-to-ext4", fsclone.Copy, ext4},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := fsclone.New(bc.mode)
			b.SetBytes(files * size)
			for n := range b.N {
				dstDir := mkdir(b, bc.dst, fmt.Sprint("deploy-", n))
				for i := range files {
					name := fmt.Sprint(i)
					if _, err := c.Clone(filepath.Join(srcDir, name), filepath.Join(dstDir, name), true); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				if err := os.RemoveAll(dstDir); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*files), "ns/file")
		})
	}
}

// linkAt calls LinkAt with directory descriptors, as pkg/deploy does.
func linkAt(t *testing.T, c *fsclone.Cloner, src, dst string) bool {
	t.Helper()
	sd, err := unix.Open(filepath.Dir(src), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sd)
	dd, err := unix.Open(filepath.Dir(dst), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dd)
	var st, dirSt unix.Stat_t
	if err := unix.Fstatat(sd, filepath.Base(src), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(dd, &dirSt); err != nil {
		t.Fatal(err)
	}
	ok, err := c.LinkAt(sd, filepath.Base(src), &st, dd, filepath.Base(dst), dirSt.Dev)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// LinkAt links only where the cloner would hardlink anyway, and only once
// a Clone has told it so; it counts what it links.
func TestLinkAt(t *testing.T) {
	ext4 := mountFS(t, "ext4")
	src := filepath.Join(mkdir(t, ext4, "store"), "file")
	writeRandom(t, src, 64<<10)
	dstDir := mkdir(t, ext4, "deploy")

	c := fsclone.New(fsclone.Auto)
	if linkAt(t, c, src, filepath.Join(dstDir, "early")) {
		t.Errorf("LinkAt linked before any Clone probed the filesystems")
	}
	clone(t, c, src, filepath.Join(dstDir, "first"), true, fsclone.MethodHardlink)
	fast := filepath.Join(dstDir, "fast")
	if !linkAt(t, c, src, fast) {
		t.Fatalf("LinkAt did not link on ext4 after a hardlinking Clone")
	}
	if stat(t, fast).Ino != stat(t, src).Ino {
		t.Errorf("LinkAt's result is not the source inode")
	}
	if got := c.Stats().Files[fsclone.MethodHardlink]; got != 2 {
		t.Errorf("hardlinks counted: %d, want 2", got)
	}
	if linkAt(t, fsclone.New(fsclone.Copy), src, filepath.Join(dstDir, "copy")) {
		t.Errorf("LinkAt linked in Copy mode")
	}

	xfs := mountFS(t, "xfs")
	xsrc := filepath.Join(mkdir(t, xfs, "store"), "file")
	writeRandom(t, xsrc, 64<<10)
	xdst := mkdir(t, xfs, "deploy")
	xc := fsclone.New(fsclone.Auto)
	clone(t, xc, xsrc, filepath.Join(xdst, "first"), true, fsclone.MethodReflink)
	if linkAt(t, xc, xsrc, filepath.Join(xdst, "second")) {
		t.Errorf("LinkAt hardlinked where reflinks are possible")
	}
}
