package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bootstore/bootstore/tests/harness"
)

// Crash counts: each mutating command is killed with SIGKILL at random
// points, and after every kill the host is checked the way a user or the
// next boot would: `status` answers, podman reads the store, and every boot
// entry points at a deployment and a kernel that exist. Then the command is
// run again to completion, which must succeed (recovery). The test counts
// every bad outcome, logs the counts and fails unless all are 0.
//
// BOOTSTORE_CRASH_TRIALS sets the kills per command (default 4, which CI
// runs; the bar is 50: BOOTSTORE_CRASH_TRIALS=50 go test -run
// TestCrashCounts ./tests/e2e/). BOOTSTORE_CRASH_SEED sets the seed of the
// kill points (default 1); the seed is logged, so a bad outcome can be
// replayed.

// crashCounts are the bad outcomes of one command's trials.
type crashCounts struct {
	trials, killedEarly, completed         int // kills; kills before the command exited; runs that finished first
	statusFails, podmanFails, danglingBoot int
	rerunFails                             int
}

func (c crashCounts) bad() int {
	return c.statusFails + c.podmanFails + c.danglingBoot + c.rerunFails
}

func (c crashCounts) String() string {
	return fmt.Sprintf("%d trials (%d killed mid-run, %d finished before the kill): status failed %d, podman failed %d, boot entry at a missing deployment or kernel %d, rerun failed %d",
		c.trials, c.killedEarly, c.completed, c.statusFails, c.podmanFails, c.danglingBoot, c.rerunFails)
}

func crashTrials(t *testing.T) int {
	n := 4
	if s := os.Getenv("BOOTSTORE_CRASH_TRIALS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("BOOTSTORE_CRASH_TRIALS=%q: want a positive number", s)
		}
		n = v
	}
	return n
}

func crashSeed(t *testing.T) uint64 {
	seed := uint64(1)
	if s := os.Getenv("BOOTSTORE_CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("BOOTSTORE_CRASH_SEED=%q: want a number", s)
		}
		seed = v
	}
	return seed
}

// killAfter starts bootstore args, sends SIGKILL to its process group after
// delay and reports whether the command was still running then.
func (h *host) killAfter(delay time.Duration, args ...string) (killed bool) {
	h.t.Helper()
	cmd := h.command(context.Background(), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
		return false
	case <-time.After(delay):
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
	return true
}

// timed runs bootstore args to success and returns how long it took.
func (h *host) timed(args ...string) time.Duration {
	h.t.Helper()
	start := time.Now()
	h.ok(args...)
	return time.Since(start)
}

// checkAfterCrash counts what is broken on h now; what says which trial.
func (h *host) checkAfterCrash(c *crashCounts, what string) {
	h.t.Helper()
	res := h.run("status", "--format", "json")
	var v map[string]any
	if res.code != 0 || json.Unmarshal([]byte(res.stdout), &v) != nil {
		c.statusFails++
		h.t.Errorf("%s: status fails after the kill:\n%s", what, res)
	}
	// Only once the store exists: podman run against a missing store path
	// would create a store of its own there, which the rerun rightly
	// refuses to take over.
	if _, err := os.Stat(filepath.Join(h.storageRoot(), "bootstore.json")); err != nil {
		// nothing to read yet
	} else if out, err := h.podmanC.Run(h.t, "images", "-q"); err != nil {
		c.podmanFails++
		h.t.Errorf("%s: podman cannot read the store: %v\n%s", what, err, out)
	}
	if bad := h.danglingBootEntries(); len(bad) != 0 {
		c.danglingBoot++
		h.t.Errorf("%s: %s", what, strings.Join(bad, "; "))
	}
}

// danglingBootEntries reads ROOT/boot/loader/entries itself (not through
// bootstore) and returns one line for every entry whose ostree= deployment
// or linux/initrd file is missing.
func (h *host) danglingBootEntries() []string {
	var bad []string
	entries, _ := filepath.Glob(filepath.Join(h.root, "boot/loader/entries/*.conf"))
	for _, e := range entries {
		data, err := os.ReadFile(e)
		if err != nil {
			bad = append(bad, err.Error())
			continue
		}
		dep := ""
		for _, line := range strings.Split(string(data), "\n") {
			key, value, _ := strings.Cut(strings.TrimSpace(line), " ")
			switch key {
			case "linux", "initrd":
				if _, err := os.Stat(filepath.Join(h.root, "boot", value)); err != nil {
					bad = append(bad, fmt.Sprintf("boot entry %s: %s %s is missing", filepath.Base(e), key, value))
				}
			case "options":
				for _, arg := range strings.Fields(value) {
					if v, ok := strings.CutPrefix(arg, "ostree="); ok {
						dep = v
					}
				}
			}
		}
		if dep == "" {
			bad = append(bad, fmt.Sprintf("boot entry %s has no ostree= argument", filepath.Base(e)))
		} else if _, err := os.Stat(filepath.Join(h.root, dep, "usr")); err != nil {
			bad = append(bad, fmt.Sprintf("boot entry %s points at a missing deployment %s", filepath.Base(e), dep))
		}
	}
	return bad
}

// crashDelay picks a kill point in [0, 1.2*full): most kills land while
// the command runs, a few after it finished.
func crashDelay(rng *rand.Rand, full time.Duration) time.Duration {
	return time.Duration(rng.Int64N(int64(full)*12/10 + 1))
}

func TestCrashCounts(t *testing.T) {
	harness.RequireRoot(t)
	trials, seed := crashTrials(t), crashSeed(t)
	t.Logf("crash counts: %d kills per command, seed %d (BOOTSTORE_CRASH_TRIALS, BOOTSTORE_CRASH_SEED)", trials, seed)
	reg := harness.StartRegistry(t)
	reg.Push(t, harness.AppImage(t, "crashlbi"), "apps/crashlbi:1", "gzip")
	bound := []harness.Bound{harness.BoundImage("crashlbi", reg.Ref("apps/crashlbi:1"))}
	reg.Push(t, osVersion(t, "1", bound, harness.Layer{etcFile("x", "1\n")}), "os:v1", "gzip")
	reg.Push(t, crashImages(t)["os:a"], "os:a", "gzip")
	for i := 0; i < 4; i++ {
		reg.Push(t, bigOSImage(t, 1<<20+i), fmt.Sprintf("junk/%d:1", i), "gzip")
	}

	var total []string
	report := func(name string, c crashCounts) {
		t.Logf("crash counts, %s: %s", name, c)
		total = append(total, name+": "+c.String())
		if c.bad() != 0 {
			t.Errorf("%s: %d bad outcomes (seed %d)", name, c.bad(), seed)
		}
	}
	t.Run("install", func(t *testing.T) { report("install", crashInstall(t, reg, trials, seed)) })
	t.Run("upgrade", func(t *testing.T) { report("upgrade", crashUpgrade(t, reg, trials, seed)) })
	t.Run("finalize", func(t *testing.T) { report("finalize", crashFinalize(t, reg, trials, seed)) })
	t.Run("gc", func(t *testing.T) { report("gc", crashGC(t, reg, trials, seed)) })
	t.Logf("crash counts (seed %d):\n  %s", seed, strings.Join(total, "\n  "))
}

func upgradeArgs(h *host) []string {
	return []string{"upgrade", "--tls-verify=false", "--signature-policy", h.policy, "--copy-mode", "copy", "--quiet"}
}

func crashInstall(t *testing.T, reg *harness.Registry, trials int, seed uint64) crashCounts {
	rng := rand.New(rand.NewPCG(seed, 1))
	base := t.TempDir()
	var c crashCounts
	ref := reg.Ref("os:a")
	var full time.Duration
	{
		h := newHostAt(t, filepath.Join(base, "timing"))
		full = h.timed(h.installArgs(ref, "--experimental-unified-storage", "--copy-mode", "copy")...)
	}
	t.Logf("an install takes %v", full)
	for i := 0; i < trials; i++ {
		h := newHostAt(t, filepath.Join(base, strconv.Itoa(i)))
		args := h.installArgs(ref, "--experimental-unified-storage", "--copy-mode", "copy")
		c.trials++
		if h.killAfter(crashDelay(rng, full), args...) {
			c.killedEarly++
		} else {
			c.completed++
		}
		what := fmt.Sprintf("install trial %d", i)
		h.checkAfterCrash(&c, what)
		if res := h.run(args...); res.code != 0 {
			// The boot entry is the install's last step: a kill after it
			// leaves an installed host, which a second install refuses
			// (exit 7), rightly.
			if res.code != 7 || len(h.deployments("default")) != 1 || len(h.danglingBootEntries()) != 0 {
				c.rerunFails++
				t.Errorf("%s: the rerun failed:\n%s", what, res)
			}
		}
		h.checkAfterCrash(&c, what+" after the rerun")
		harness.UnmountUnder(h.root)
		os.RemoveAll(h.root)
	}
	return c
}

// crashHostWithV1 installs os:v1; the trials then move that tag.
func crashHostWithV1(t *testing.T, reg *harness.Registry) *host {
	h := newHost(t)
	h.ok(h.installArgs(reg.Ref("os:v1"), "--experimental-unified-storage")...)
	return h
}

// stagedWhich returns the os:a/os:b marker of the staged deployment, or "".
func (h *host) stagedWhich() string {
	st := h.status()
	if st.Status.Staged == nil {
		return ""
	}
	data, err := os.ReadFile(filepath.Join(h.deploymentDir(st.Status.Staged.Bootstore.Deployment), "usr/share/os/which"))
	if err != nil {
		return "?"
	}
	return string(data)
}

// crashImages are two upgrade targets of 1000 files that alternate as the
// booted tag, so that every trial has a new image to stage.
func crashImages(t *testing.T) map[string]harness.Image {
	imgs := map[string]harness.Image{}
	for i, tag := range []string{"os:a", "os:b"} {
		img := manyFilesImage(t, 1000)
		img.Layers = append(img.Layers, harness.WithParents(harness.Layer{etcFile("x", tag+"\n"),
			{Path: "/usr/share/os/which", Type: harness.File, Data: []byte(strconv.Itoa(i))}}))
		imgs[tag] = img
	}
	return imgs
}

func crashUpgrade(t *testing.T, reg *harness.Registry, trials int, seed uint64) crashCounts {
	rng := rand.New(rand.NewPCG(seed, 2))
	imgs := crashImages(t)
	h := crashHostWithV1(t, reg)
	// The install recorded os:v1; upgrades follow os:v1, so move that tag.
	retag := func() {
		tag := "os:a"
		if h.stagedWhich() == "0" {
			tag = "os:b"
		}
		reg.Push(t, imgs[tag], "os:v1", "gzip")
	}
	retag()
	h.ok(upgradeArgs(h)...) // pulls both images: later upgrades find them in the store
	retag()
	full := h.timed(upgradeArgs(h)...)
	t.Logf("an upgrade takes %v", full)
	var c crashCounts
	for i := 0; i < trials; i++ {
		retag()
		c.trials++
		if h.killAfter(crashDelay(rng, full), upgradeArgs(h)...) {
			c.killedEarly++
		} else {
			c.completed++
		}
		what := fmt.Sprintf("upgrade trial %d", i)
		h.checkAfterCrash(&c, what)
		if res := h.run(upgradeArgs(h)...); res.code != 0 {
			c.rerunFails++
			t.Errorf("%s: the rerun failed:\n%s", what, res)
		}
		h.checkAfterCrash(&c, what+" after the rerun")
	}
	if left := h.leftovers(); len(left) != 0 {
		t.Errorf("leftovers after the last upgrade: %v", left)
	}
	return c
}

func crashFinalize(t *testing.T, reg *harness.Registry, trials int, seed uint64) crashCounts {
	rng := rand.New(rand.NewPCG(seed, 3))
	imgs := crashImages(t)
	h := crashHostWithV1(t, reg)
	tag := "os:b"
	stage := func() {
		// Alternate: the image just finalized is the default entry's.
		if tag == "os:a" {
			tag = "os:b"
		} else {
			tag = "os:a"
		}
		reg.Push(t, imgs[tag], "os:v1", "gzip")
		h.ok(upgradeArgs(h)...)
		if h.status().Status.Staged == nil {
			t.Fatal("the upgrade staged nothing")
		}
	}
	stage()
	full := h.timed("internals", "finalize-staged")
	t.Logf("a finalization takes %v", full)
	var c crashCounts
	resumed := 0
	defer func() { t.Logf("finalize: %d reruns resumed a finalization killed after the boot entry swap", resumed) }()
	for i := 0; i < trials; i++ {
		stage()
		c.trials++
		if h.killAfter(crashDelay(rng, full), "internals", "finalize-staged") {
			c.killedEarly++
		} else {
			c.completed++
		}
		what := fmt.Sprintf("finalize trial %d", i)
		h.checkAfterCrash(&c, what)
		if res := h.run("internals", "finalize-staged"); res.code != 0 {
			c.rerunFails++
			t.Errorf("%s: the rerun failed:\n%s", what, res)
		} else if strings.Contains(res.stdout, "interrupted finalization") {
			resumed++
		}
		h.checkAfterCrash(&c, what+" after the rerun")
	}
	return c
}

func crashGC(t *testing.T, reg *harness.Registry, trials int, seed uint64) crashCounts {
	rng := rand.New(rand.NewPCG(seed, 4))
	h := crashHostWithV1(t, reg)
	roots := h.storeIDs()
	pullJunk := func() {
		for i := 0; i < 4; i++ {
			h.ok(h.pullArgs("--quiet", "--bound-images", "skip", reg.Ref(fmt.Sprintf("junk/%d:1", i)))...)
		}
	}
	pullJunk()
	full := h.timed("gc")
	t.Logf("a gc of 4 images takes %v", full)
	var c crashCounts
	for i := 0; i < trials; i++ {
		pullJunk()
		c.trials++
		if h.killAfter(crashDelay(rng, full), "gc") {
			c.killedEarly++
		} else {
			c.completed++
		}
		what := fmt.Sprintf("gc trial %d", i)
		h.checkAfterCrash(&c, what)
		for id := range roots {
			if !h.storeIDs()[id] {
				c.rerunFails++
				t.Errorf("%s: the killed gc removed the rooted image %s", what, id)
			}
		}
		if res := h.run("gc"); res.code != 0 {
			c.rerunFails++
			t.Errorf("%s: the rerun failed:\n%s", what, res)
		}
		if orphans := h.orphanLayers(); len(orphans) != 0 {
			c.rerunFails++
			t.Errorf("%s: orphan layers after the rerun: %v", what, orphans)
		}
		h.checkAfterCrash(&c, what+" after the rerun")
	}
	return c
}
