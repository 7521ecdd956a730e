package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/tests/harness"
)

// Sizes of the demo's OS payload: large enough that "bytes fetched
// against the image size" and "disk used against a split host" mean
// something, small enough that the demo runs in a minute or two.
const (
	payloadBytes = 48 << 20
	payloadFiles = 600
	changedShare = 0.02 // of the payload's files, rewritten in v2
	loopFSBytes  = 1 << 30
)

// osV builds the demo's OS image at version: the harness OS (toolbox,
// kernel, os-release, bound images), the payload, and /etc defaults.
func osV(t *demoT, version string, bound []harness.Bound, payload harness.Image, etc map[string]string) harness.Image {
	var etcLayer harness.Layer
	for name, content := range etc {
		etcLayer = append(etcLayer, harness.Entry{Path: "/etc/" + name, Type: harness.File, Data: []byte(content)})
	}
	extra := append(append([]harness.Layer(nil), payload.Layers...), harness.WithParents(etcLayer))
	return harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: version, BoundImages: bound, ExtraLayers: extra})
}

// run is the demo: one host's whole life on a loop-mounted XFS, beside a
// split host for the disk comparison.
func run(t *demoT) {
	bin, err := filepath.Abs("bin/bootstore")
	if err != nil || !exists(bin) {
		t.Fatalf("bin/bootstore is missing: run `make build` (or `make demo`) first")
	}
	harness.RequireRoot(t)
	var sum summary
	var reg *harness.Registry
	sum.time("start a registry", func() {
		step("Starting a registry on 127.0.0.1 (Debian's docker-registry behind a counting proxy)")
		reg = harness.StartRegistry(t)
		fmt.Println("  registry:", reg.Addr)
	})

	apps := map[string]string{"web": reg.Ref("apps/web:1.0"), "logger": reg.Ref("apps/logger:1.0"), "metrics": reg.Ref("apps/metrics:latest")}
	bound := []harness.Bound{harness.BoundImage("web", apps["web"]), harness.BoundContainer("logger", apps["logger"]),
		harness.BoundImage("metrics", apps["metrics"])}
	payload := harness.BigImage(t, payloadBytes, payloadFiles, 7)
	v1 := osV(t, "1", bound, payload, map[string]string{"motd": "Welcome to v1\n", "app.conf": "level=info\n"})
	osRef := reg.Ref("demo/os:stable")
	sum.time("publish v1", func() {
		step("Publishing three app images and OS v1 (48 MB payload) that binds them, all zstd:chunked")
		for _, name := range []string{"web", "logger", "metrics"} {
			reg.Push(t, harness.AppImage(t, name), strings.TrimPrefix(apps[name], reg.Addr+"/"), "zstd:chunked")
			fmt.Println("  pushed", apps[name])
		}
		reg.Push(t, v1, "demo/os:stable", "zstd:chunked")
		fmt.Println("  pushed", osRef, "binding web.image, logger.container, metrics.image")
	})

	root := harness.LoopFS(t, loopFSBytes, harness.MkfsXFSReflink...)
	splitRoot := harness.LoopFS(t, loopFSBytes, harness.MkfsXFSReflink...)
	rootBase, splitBase := usedBytes(t, root), usedBytes(t, splitRoot)
	policy := harness.PolicyFile(t)
	reg1 := []string{"--tls-verify=false", "--signature-policy", policy}
	h := &demoHost{t: t, bin: bin, root: root}

	reg.ResetStats()
	sum.time("install", func() {
		step("Installing a host from v1 into one unified store on a loop-mounted XFS (reflinks)")
		h.run(append(append([]string{"install", "to-filesystem", "--experimental-unified-storage"}, reg1...),
			"--source-imgref", osRef, "--karg", "console=ttyS0", root)...)
	})
	sum.installFetched = reg.Stats().BlobBytes
	sum.unifiedUsed = usedBytes(t, root) - rootBase

	sum.time("split host (comparison)", func() {
		step("For comparison, a split host of the same v1: deployed by copy, and the image pulled again for podman")
		split := &demoHost{t: t, bin: bin, root: splitRoot}
		split.run(append(append([]string{"install", "to-filesystem"}, reg1...), "--source-imgref", osRef, splitRoot)...)
		split.run(append([]string{"image", "pull"}, append(reg1, osRef)...)...)
		sum.splitUsed = usedBytes(t, splitRoot) - splitBase
		fmt.Printf("\n  disk used by v1: unified host %s, split host %s\n", mb(sum.unifiedUsed), mb(sum.splitUsed))
	})

	step("What the host runs")
	h.run("status")
	dep1 := h.deployment("booted")

	sum.time("podman run", func() {
		step("podman runs a bound image straight from the unified store (additional image store, no pull)")
		podman := harness.NewPodman(t, "overlay")
		podman.StorageOpts = []string{"additionalimagestore=" + filepath.Join(root, "ostree/bootc/storage")}
		reg.ResetStats()
		args := []string{"run", "--rm", apps["web"], "cat", "/usr/share/harness-app/web"}
		fmt.Printf("\n$ podman --storage-opt additionalimagestore=%s/ostree/bootc/storage %s\n", root, strings.Join(args, " "))
		out, err := podman.Run(t, args...)
		fmt.Print(out)
		if err != nil {
			t.Fatalf("podman: %v", err)
		}
		if n := reg.Stats().Requests; n != 0 {
			t.Errorf("podman made %d registry requests", n)
		}
		fmt.Println("  registry requests made by podman: 0")
	})

	step("The admin edits /etc on the booted host")
	etc := filepath.Join(root, "ostree/deploy/default/deploy", dep1, "etc")
	show("echo level=debug > /etc/app.conf", os.WriteFile(filepath.Join(etc, "app.conf"), []byte("level=debug\n"), 0o644), t)

	v2payload, _ := harness.ChangeFilesInPlace(payload, changedShare, 8)
	v2 := osV(t, "2", bound, v2payload, map[string]string{"motd": "Welcome to v2\n", "app.conf": "level=warn\n", "new-in-v2.conf": "feature=on\n"})
	sum.time("publish v2", func() {
		step(fmt.Sprintf("Publishing v2: %.0f%% of the payload's files rebuilt, /etc defaults changed (zstd:chunked)", changedShare*100))
		reg.Push(t, v2, "demo/os:stable", "zstd:chunked")
	})
	sum.imageBytes = imageSize(v2)

	sum.time("upgrade --check", func() {
		step("The timer's first question: is there an update?")
		h.run(append([]string{"upgrade", "--check"}, reg1...)...)
	})
	reg.ResetStats()
	sum.time("upgrade", func() {
		step("Upgrading: a partial pull fetches only the files the store lacks, then v2 is staged")
		h.run(append([]string{"upgrade"}, reg1...)...)
	})
	sum.upgradeFetched = reg.Stats().BlobBytes
	fmt.Printf("\n  fetched %s for an image of %s (%.1f%%)\n", mb(sum.upgradeFetched), mb(sum.imageBytes),
		100*float64(sum.upgradeFetched)/float64(sum.imageBytes))

	sum.time("finalize + reboot", func() {
		step("Shutdown finalizes the staged deployment (three-way /etc merge); then a simulated reboot")
		h.run("internals", "finalize-staged")
		h.run("internals", "simulate-reboot")
	})
	h.run("status")
	dep2 := h.deployment("booted")
	step("/etc after the merge: the admin's change kept, untouched defaults updated, new defaults added")
	etc2 := filepath.Join(root, "ostree/deploy/default/deploy", dep2, "etc")
	for _, name := range []string{"app.conf", "motd", "new-in-v2.conf"} {
		data, err := os.ReadFile(filepath.Join(etc2, name))
		show("cat /etc/"+name, err, t)
		fmt.Print("  ", string(data))
	}

	sum.time("rollback", func() {
		step("Rolling back to v1 (takes effect at the next boot)")
		h.run("rollback")
		h.run("internals", "simulate-reboot")
	})
	h.run("status", "--booted")
	if got := h.deployment("booted"); got != dep1 {
		t.Errorf("after the rollback the booted deployment is %s, want %s", got, dep1)
	}

	step("An image no deployment uses: a one-off pull the admin made")
	reg.Push(t, harness.BigImage(t, 8<<20, 40, 99), "tools/debug:1", "zstd:chunked")
	h.run(append([]string{"image", "pull", "--allow-non-bootable"}, append(reg1, reg.Ref("tools/debug:1"))...)...)
	h.run("image", "list")
	sum.time("gc", func() {
		step("Garbage collection: a dry run, then the real one")
		h.run("gc", "--dry-run")
		before := usedBytes(t, root)
		h.run("gc")
		sum.gcFreed = before - usedBytes(t, root)
	})
	step("Every image with its consumers and the bytes only it holds")
	h.run("image", "list")
	sum.finalUsed = usedBytes(t, root) - rootBase
	sum.print()
}

// demoHost runs bootstore on one sysroot, printing each command and its
// output.
type demoHost struct {
	t    *demoT
	bin  string
	root string
}

func (h *demoHost) run(args ...string) string {
	full := append([]string{"--sysroot", h.root}, args...)
	fmt.Printf("\n$ bootstore %s\n", strings.Join(full, " "))
	out, err := runTee(h.bin, full, false)
	if err != nil {
		h.t.Fatalf("bootstore %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// deployment names the deployment in slot (booted, rollback) of status.
func (h *demoHost) deployment(slot string) string {
	out, err := runTee(h.bin, []string{"--sysroot", h.root, "status", "--format", "json"}, true)
	if err != nil {
		h.t.Fatalf("status: %v", err)
	}
	d, err := deploymentIn(out, slot)
	if err != nil {
		h.t.Fatalf("status: %v", err)
	}
	return d
}

func show(what string, err error, t *demoT) {
	fmt.Printf("\n# %s\n", what)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// usedBytes is what the filesystem holding dir has in use, after a sync.
func usedBytes(t *demoT, dir string) int64 {
	unix.Sync()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatalf("statfs %s: %v", dir, err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

// imageSize is the uncompressed size of img's regular files.
func imageSize(img harness.Image) int64 {
	var n int64
	for _, l := range img.Layers {
		for _, e := range l {
			if e.Type != harness.File {
				continue
			}
			if e.Content != nil {
				n += e.Size
			} else {
				n += int64(len(e.Data))
			}
		}
	}
	return n
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// summary is the demo's closing screen.
type summary struct {
	steps                             []string
	durations                         []time.Duration
	installFetched, upgradeFetched    int64
	imageBytes, gcFreed               int64
	unifiedUsed, splitUsed, finalUsed int64
}

func (s *summary) time(name string, f func()) {
	start := time.Now()
	f()
	s.steps = append(s.steps, name)
	s.durations = append(s.durations, time.Since(start))
}

func (s *summary) print() {
	fmt.Printf("\n==> Summary\n\n")
	fmt.Printf("  install from v1:       fetched %s (OS image and 3 bound images)\n", mb(s.installFetched))
	fmt.Printf("  upgrade to v2:         fetched %s of a %s image (%.1f%%), %.0f%% of its files changed\n",
		mb(s.upgradeFetched), mb(s.imageBytes), 100*float64(s.upgradeFetched)/float64(s.imageBytes), changedShare*100)
	fmt.Printf("  disk used by v1:       unified %s, split %s (deployment + the image again for podman): %.2fx\n",
		mb(s.unifiedUsed), mb(s.splitUsed), float64(s.splitUsed)/float64(s.unifiedUsed))
	fmt.Printf("  disk used at the end:  %s (unified store, deployments v1 and v2, after gc)\n", mb(s.finalUsed))
	fmt.Printf("  gc freed:              %s\n\n", mb(s.gcFreed))
	for i, name := range s.steps {
		fmt.Printf("  %-26s %6.2f s\n", name, s.durations[i].Seconds())
	}
}
