package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/tests/harness"
)

// Helpers of the filesystem benchmarks (disk usage, deploy times).

// bootstoreBinary is the binary under test: $BOOTSTORE_BIN when set (e.g. one built
// from a clean checkout while the working tree is being edited), else one built from
// this module.
func bootstoreBinary(b *testing.B) string {
	b.Helper()
	if p := os.Getenv("BOOTSTORE_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			b.Fatalf("BOOTSTORE_BIN: %v", err)
		}
		return p
	}
	return buildBootstore(b)
}

// sysroot is a bootstore host root on a benchmark filesystem.
type sysroot struct {
	b      *testing.B
	bin    string
	root   string
	policy string
}

func newSysroot(b *testing.B, bin, root, policy string) *sysroot {
	b.Helper()
	if err := os.MkdirAll(root, 0o755); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { harness.UnmountUnder(root) })
	return &sysroot{b: b, bin: bin, root: root, policy: policy}
}

// run runs `bootstore --sysroot ROOT args...` and returns its stdout; failure is fatal.
func (s *sysroot) run(args ...string) string {
	s.b.Helper()
	return s.exec(s.bin, append([]string{"--sysroot", s.root}, args...)...)
}

// exec runs name args... and returns its stdout; failure is fatal.
func (s *sysroot) exec(name string, args ...string) string {
	s.b.Helper()
	cmd := exec.Command(name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		s.b.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// pull is `bootstore image pull REF` (the OS image into the unified store).
func (s *sysroot) pull(ref string) {
	s.b.Helper()
	s.run("image", "pull", "--quiet", "--tls-verify=false", "--signature-policy", s.policy, ref)
}

// install is `bootstore install to-filesystem --source-imgref REF [flags] ROOT`; it
// returns install's stdout.
func (s *sysroot) install(ref string, flags ...string) string {
	s.b.Helper()
	return s.run(s.installArgs(ref, flags...)...)
}

// installArgs are the arguments of install after the global flags.
func (s *sysroot) installArgs(ref string, flags ...string) []string {
	args := append([]string{"install", "to-filesystem", "--tls-verify=false", "--signature-policy", s.policy,
		"--source-imgref", ref}, flags...)
	return append(args, s.root)
}

// storage is the unified store's graph root.
func (s *sysroot) storage() string { return filepath.Join(s.root, "ostree/bootc/storage") }

// deployment is the path of the only deployment of the default stateroot.
func (s *sysroot) deployment() string {
	s.b.Helper()
	dir := filepath.Join(s.root, "ostree/deploy/default/deploy")
	entries, err := os.ReadDir(dir)
	if err != nil {
		s.b.Fatal(err)
	}
	var deps []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			deps = append(deps, filepath.Join(dir, e.Name()))
		}
	}
	if len(deps) != 1 {
		s.b.Fatalf("want one deployment in %s, got %v", dir, deps)
	}
	return deps[0]
}

// remove deletes the whole sysroot (after detaching anything mounted in it).
func (s *sysroot) remove() {
	s.b.Helper()
	harness.UnmountUnder(s.root)
	if err := os.RemoveAll(s.root); err != nil {
		s.b.Fatal(err)
	}
}

var deployedRe = regexp.MustCompile(`(?m)^Deployed (\d+) files, .* in ([0-9.]+)s: .*$`)

// deployed finds install's "Deployed N files, SIZE in X.XXs: ..." line and returns
// the line and its seconds.
func deployed(b *testing.B, installOut string) (string, float64) {
	b.Helper()
	m := deployedRe.FindStringSubmatch(installOut)
	if m == nil {
		b.Fatalf("install printed no Deployed line:\n%s", installOut)
	}
	sec, err := strconv.ParseFloat(m[2], 64)
	if err != nil {
		b.Fatal(err)
	}
	return m[0], sec
}

// usedBytes syncs the filesystem holding dir and returns the bytes it uses
// (total - free blocks, as statfs reports them). XFS frees the blocks of deleted
// files in the background (inode inactivation), so it waits until two readings
// 250ms apart agree (at most 20s).
func usedBytes(b *testing.B, dir string) int64 {
	b.Helper()
	read := func() int64 {
		syncFS(b, dir)
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			b.Fatalf("statfs %s: %v", dir, err)
		}
		return int64(st.Blocks-st.Bfree) * st.Bsize
	}
	last := read()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		time.Sleep(250 * time.Millisecond)
		cur := read()
		if cur == last {
			break
		}
		if os.Getenv("BOOTSTORE_BENCH_DEBUG") != "" {
			fmt.Printf("  (statfs of %s moved by %d bytes while settling)\n", dir, cur-last)
		}
		last = cur
	}
	return last
}

// settledUsedBytes is usedBytes after asking XFS to give back its speculative
// preallocations (post-EOF blocks and the copy-on-write fork reservations that
// copy_file_range/reflinked writes leave, which XFS otherwise keeps for
// fs.xfs.speculative_prealloc_lifetime, 300s by default): the steady-state usage.
// On other filesystems it is usedBytes.
func settledUsedBytes(b *testing.B, dir string) int64 {
	b.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		b.Fatalf("statfs %s: %v", dir, err)
	}
	if st.Type == unix.XFS_SUPER_MAGIC {
		syncFS(b, dir)
		if out, err := exec.Command("xfs_spaceman", "-c", "prealloc -s", dir).CombinedOutput(); err != nil {
			b.Fatalf("xfs_spaceman -c 'prealloc -s' %s: %v\n%s", dir, err, out)
		}
	}
	return usedBytes(b, dir)
}

// syncFS is syncfs(2) of the filesystem holding dir; it returns how long it took.
func syncFS(b *testing.B, dir string) time.Duration {
	b.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatalf("open %s: %v", dir, err)
	}
	defer unix.Close(fd)
	start := time.Now()
	if err := unix.Syncfs(fd); err != nil {
		b.Fatalf("syncfs %s: %v", dir, err)
	}
	return time.Since(start)
}

// settle writes back everything dirty (sync(2)) and reads every file below dirs once
// (plain reads, so relatime's atime updates happen here and are written back by the
// second sync, not during the timed step). Page caches cannot be dropped reliably on a
// shared machine, so every timed step starts warm: its source metadata and data are
// in memory and nothing is waiting to be written back.
func settle(b *testing.B, dirs ...string) {
	b.Helper()
	unix.Sync()
	buf := make([]byte, 1<<20)
	for _, d := range dirs {
		if err := readTree(d, buf); err != nil {
			b.Fatalf("warm-up read of %s: %v", d, err)
		}
	}
	unix.Sync()
}

func readTree(dir string, buf []byte) error {
	return filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		for {
			n, rerr := f.Read(buf)
			if rerr == io.EOF || (n == 0 && rerr == nil) {
				break
			} else if rerr != nil {
				err = rerr
				break
			}
		}
		f.Close()
		return err
	})
}

// timed runs cmd and returns its wall time; failure is fatal.
func timed(b *testing.B, cmd *exec.Cmd) time.Duration {
	b.Helper()
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		b.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return d
}

// removeAll deletes p and gives the freed blocks back to the host (fstrim punches
// holes into the loop device's sparse backing file; best effort).
func removeAll(b *testing.B, mnt, p string) {
	b.Helper()
	harness.UnmountUnder(p)
	if err := os.RemoveAll(p); err != nil {
		b.Fatal(err)
	}
	_ = exec.Command("fstrim", mnt).Run()
}

// layoutImageSize returns the sum of the layer blob sizes of the image tagged tag in
// the OCI layout dir written with uncompressed layers: the image's uncompressed size,
// tar headers included.
func layoutImageSize(b *testing.B, dir, tag string) int64 {
	b.Helper()
	readJSON := func(p string, v any) {
		data, err := os.ReadFile(p)
		if err == nil {
			err = json.Unmarshal(data, v)
		}
		if err != nil {
			b.Fatalf("%s: %v", p, err)
		}
	}
	var idx imgspecv1.Index
	readJSON(filepath.Join(dir, "index.json"), &idx)
	for _, m := range idx.Manifests {
		if m.Annotations[imgspecv1.AnnotationRefName] != tag {
			continue
		}
		var mf imgspecv1.Manifest
		readJSON(filepath.Join(dir, "blobs", m.Digest.Algorithm().String(), m.Digest.Encoded()), &mf)
		var n int64
		for _, l := range mf.Layers {
			n += l.Size
		}
		return n
	}
	b.Fatalf("no tag %s in %s", tag, dir)
	return 0
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }
