package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// CommandTimeout bounds Podman.Run and Skopeo.Run.
var CommandTimeout = 5 * time.Minute

// RequireRoot skips the test unless it runs as root (CI does).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// RequireCommand skips the test unless name (a command or path) is executable.
func RequireCommand(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("needs %s: %v", name, err)
	}
}

// Podman runs the system podman against its own store. Empty fields are left to podman's
// defaults; StorageOpts become --storage-opt flags (e.g. "additionalimagestore=DIR").
type Podman struct {
	Root, RunRoot, Driver string
	StorageOpts           []string
	Env                   []string // extra KEY=VALUE, e.g. CONTAINERS_REGISTRIES_CONF
}

// ContainersConf is the containers.conf Podman uses: Debian's podman 4.3.1 can only run
// containers here with empty default ulimits.
const ContainersConf = "[containers]\ndefault_ulimits = []\n"

// containersConfPath writes ContainersConf (once, shared by test processes) and returns
// its path.
func containersConfPath() string {
	p := filepath.Join(cacheDir(), "containers.conf")
	if b, err := os.ReadFile(p); err == nil && string(b) == ContainersConf {
		return p
	}
	tmp, err := os.CreateTemp(cacheDir(), "containers.conf-")
	if err == nil {
		_, err = tmp.WriteString(ContainersConf)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), p)
		}
	}
	if err != nil {
		panic(fmt.Sprintf("harness: write containers.conf: %v", err))
	}
	return p
}

// Cmd returns "podman --root R --runroot RR --storage-driver D [--storage-opt O]...
// --cgroup-manager cgroupfs --runtime runc ARGS..." with CONTAINERS_CONF set.
func (p Podman) Cmd(ctx context.Context, args ...string) *exec.Cmd {
	var g []string
	for _, f := range [][2]string{{"--root", p.Root}, {"--runroot", p.RunRoot}, {"--storage-driver", p.Driver}} {
		if f[1] != "" {
			g = append(g, f[0], f[1])
		}
	}
	for _, o := range p.StorageOpts {
		g = append(g, "--storage-opt", o)
	}
	g = append(g, "--cgroup-manager", "cgroupfs", "--runtime", "runc")
	cmd := exec.CommandContext(ctx, "podman", append(g, args...)...)
	cmd.Env = append(append(os.Environ(), "CONTAINERS_CONF="+containersConfPath()), p.Env...)
	return cmd
}

// Run runs podman ARGS (adding "--network none" after "run") and returns its stdout; the
// error includes the command line and stderr.
func (p Podman) Run(t testing.TB, args ...string) (string, error) {
	t.Helper()
	if len(args) > 0 && args[0] == "run" {
		args = append([]string{"run", "--network", "none"}, args[1:]...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	return run(p.Cmd(ctx, args...))
}

// Skopeo runs the system skopeo with --insecure-policy.
type Skopeo struct {
	Env []string // extra KEY=VALUE, e.g. CONTAINERS_REGISTRIES_CONF
}

// Cmd returns "skopeo --insecure-policy ARGS...".
func (s Skopeo) Cmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "skopeo", append([]string{"--insecure-policy"}, args...)...)
	cmd.Env = append(os.Environ(), s.Env...)
	return cmd
}

// Run runs skopeo ARGS and returns its stdout; the error includes the command and stderr.
func (s Skopeo) Run(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	return run(s.Cmd(ctx, args...))
}

func run(cmd *exec.Cmd) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// PolicyFile writes a policy.json accepting anything and returns its path.
func PolicyFile(t testing.TB) string {
	t.Helper()
	return writeTemp(t, "policy.json", `{"default":[{"type":"insecureAcceptAnything"}]}`+"\n")
}

// RegistriesConf writes a registries.conf (v2, no unqualified-search registries) marking
// each host:port in insecure as an insecure (plain HTTP) registry, and returns its path
// (for CONTAINERS_REGISTRIES_CONF or types.SystemContext.SystemRegistriesConfPath).
func RegistriesConf(t testing.TB, insecure ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("unqualified-search-registries = []\n")
	for _, r := range insecure {
		fmt.Fprintf(&b, "\n[[registry]]\nlocation = %q\ninsecure = true\n", r)
	}
	return writeTemp(t, "registries.conf", b.String())
}

func writeTemp(t testing.TB, name, content string) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// NewPodman returns a Podman whose Root and RunRoot live in t.TempDir(), using driver
// ("vfs", "overlay"; "" = podman's default). t.Cleanup removes its containers and detaches
// any mounts left under those directories, so the temp dir can be deleted.
func NewPodman(t testing.TB, driver string) Podman {
	t.Helper()
	return PodmanOn(t, filepath.Join(t.TempDir(), "root"), driver)
}

// PodmanOn returns a Podman reading and writing the store at root with the given driver
// and a fresh run root (podman refuses run roots over 50 characters, so it lives directly
// under the system's temporary directory). t.Cleanup removes every container, waits for
// conmon's own cleanup, and detaches what podman left mounted under root and the run root.
func PodmanOn(t testing.TB, root, driver string) Podman {
	t.Helper()
	RequireCommand(t, "podman")
	runRoot, err := os.MkdirTemp("", "pr")
	if err != nil {
		t.Fatal(err)
	}
	p := Podman{Root: root, RunRoot: runRoot, Driver: driver}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = run(p.Cmd(ctx, "rm", "--all", "--force", "--time", "0"))
		// conmon starts "podman container cleanup" after a container exits; it re-mounts
		// the store, so wait for every process naming our root before unmounting.
		waitNoProcessMentions(p.Root, 30*time.Second)
		UnmountUnder(runRoot)
		UnmountUnder(root)
		os.RemoveAll(runRoot)
	})
	return p
}

// waitNoProcessMentions waits until no process has s in its command line.
func waitNoProcessMentions(s string, timeout time.Duration) {
	self := strconv.Itoa(os.Getpid())
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		busy := false
		for _, c := range procs {
			if b, err := os.ReadFile(c); err == nil && filepath.Base(filepath.Dir(c)) != self &&
				bytes.Contains(b, []byte(s)) {
				busy = true
				break
			}
		}
		if !busy {
			return
		}
	}
}

// UnmountUnder lazily detaches every mount point at or below dir, deepest first, and
// reports how many it detached.
func UnmountUnder(dir string) int {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return 0
	}
	dir = filepath.Clean(dir)
	var mps []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mps = append(mps, mp)
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	n := 0
	for _, mp := range mps {
		if syscall.Unmount(mp, syscall.MNT_DETACH) == nil {
			n++
		}
	}
	return n
}

// unescapeMountinfo decodes the \NNN octal escapes of /proc/self/mountinfo paths.
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
