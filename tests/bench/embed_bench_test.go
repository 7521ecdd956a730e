package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bootstore/bootstore/tests/harness"
)

// BenchmarkEmbed compares what a host's `bootstore upgrade` fetches from an
// OS image that carries three apps (~50 MB each, BOOTSTORE_BENCH_APP_MB)
// on a ~300 MB base (BOOTSTORE_BENCH_MB), built two ways:
//
//   - embed: `bootstore image embed` (one OS layer per app layer, plus a
//     metadata layer);
//   - podman: the `RUN podman --root /usr/lib/containers/storage pull APP`
//     layout: real podman pulls the three apps into a fresh store, which
//     becomes one layer of the OS image, as a Containerfile RUN makes it.
//
// Two upgrades from v1: "base only" (v2's base rewrites 2% of the base's
// files in a new layer and bumps its version; the apps are the same), then
// "one app" (v3: one app rewrites 2% of its files in a new layer). For the
// podman layout every rebuild re-runs the pull, as a RUN after a changed
// layer does. Bytes are blob bytes the counting proxy served.
func BenchmarkEmbed(b *testing.B) {
	harness.RequireRoot(b)
	harness.RequireCommand(b, "podman")
	bin := buildBootstore(b)
	reg := harness.StartRegistry(b)
	policy := harness.PolicyFile(b)
	baseMB, appMB := envInt("BOOTSTORE_BENCH_MB", 300), envInt("BOOTSTORE_BENCH_APP_MB", 50)

	big := harness.BigImage(b, int64(baseMB)<<20, 3000, 1)
	v1 := harness.OSImage(b, harness.OSImageOptions{Bootable: true, Version: "1", ExtraLayers: big.Layers})
	v2 := harness.ChangeFiles(harness.OSImage(b, harness.OSImageOptions{Bootable: true, Version: "2", ExtraLayers: big.Layers}), 0.02, 2)
	reg.Push(b, v1, "base:1", "gzip")
	reg.Push(b, v2, "base:2", "gzip")
	var apps, appsV3 []string
	for i := 1; i <= 3; i++ {
		app := harness.BigImage(b, int64(appMB)<<20, 500, int64(10+i))
		reg.Push(b, app, fmt.Sprintf("apps/app%d:1", i), "gzip")
		apps = append(apps, reg.Ref(fmt.Sprintf("apps/app%d:1", i)))
		if i == 1 {
			reg.Push(b, harness.ChangeFiles(app, 0.02, 3), "apps/app1:2", "gzip")
			appsV3 = append(appsV3, reg.Ref("apps/app1:2"))
		} else {
			appsV3 = append(appsV3, apps[i-1])
		}
	}
	conf := harness.RegistriesConf(b, reg.Addr)

	embedImage := func(base string, apps []string) {
		t0 := time.Now()
		args := append([]string{"--sysroot", freshDir(b), "image", "embed", "--quiet", "--tls-verify=false", "--signature-policy", policy,
			reg.Ref(base)}, apps...)
		runBootstore(b, bin, append(args, "--output", "docker://"+reg.Ref("os-embed:latest"))...)
		b.Logf("image embed %s: %v", base, time.Since(t0).Round(time.Second))
	}
	podmanImage := func(base harness.Image, apps []string) {
		t0 := time.Now()
		root := filepath.Join(freshDir(b), "storage")
		p := harness.PodmanOn(b, root, "overlay")
		p.Env = append(p.Env, "CONTAINERS_REGISTRIES_CONF="+conf)
		for _, a := range apps {
			if out, err := p.Run(b, "pull", "--quiet", "--tls-verify=false", a); err != nil {
				b.Fatalf("podman pull %s: %v\n%s", a, err, out)
			}
		}
		harness.UnmountUnder(root)
		layer, _ := harness.DirLayer(b, root, "/usr/lib/containers/storage")
		img := base
		img.Layers = append(append([]harness.Layer(nil), base.Layers...), harness.WithParents(layer))
		reg.Push(b, img, "os-podman:latest", "gzip")
		b.Logf("podman layout: %v", time.Since(t0).Round(time.Second))
	}
	type row struct {
		layout            string
		size, base, app   int64
		baseTime, appTime time.Duration
	}
	var rows []row
	for i := 0; i < b.N; i++ {
		rows = rows[:0]
		for _, layout := range []string{"embed", "podman"} {
			r := row{layout: layout}
			repo := "os-" + layout
			build := func(base string, baseImg harness.Image, apps []string) {
				if layout == "embed" {
					embedImage(base, apps)
				} else {
					podmanImage(baseImg, apps)
				}
			}
			build("base:1", v1, apps)
			r.size = layersSize(b, reg, repo, "latest")
			root := freshDir(b)
			runBootstore(b, bin, "--sysroot", root, "install", "to-filesystem", "--tls-verify=false", "--signature-policy", policy,
				"--source-imgref", reg.Ref(repo+":latest"), "--experimental-unified-storage", root)
			upgrade := func() (int64, time.Duration) {
				reg.ResetStats()
				t0 := time.Now()
				runBootstore(b, bin, "--sysroot", root, "upgrade", "--quiet", "--tls-verify=false", "--signature-policy", policy)
				d := time.Since(t0)
				runBootstore(b, bin, "--sysroot", root, "internals", "finalize-staged")
				runBootstore(b, bin, "--sysroot", root, "internals", "simulate-reboot")
				return reg.Stats().BlobBytes, d
			}
			build("base:2", v2, apps)
			r.base, r.baseTime = upgrade()
			build("base:2", v2, appsV3)
			r.app, r.appTime = upgrade()
			rows = append(rows, r)
			unmountAll(root)
			os.RemoveAll(root)
		}
	}
	fmt.Printf("\nUpgrades of an OS image of a %d MB base and three %d MB apps, through the counting proxy (blob bytes); 2 CPUs.\n", baseMB, appMB)
	fmt.Printf("base only: v2 rewrites 2%% of the base's files in a new layer; one app: v3 rewrites 2%% of one app's files in a new layer.\n\n")
	fmt.Printf("%-8s %12s | %12s %8s | %12s %8s\n", "layout", "image size", "base only", "time", "one app", "time")
	for _, r := range rows {
		fmt.Printf("%-8s %10.1fMB | %10.2fMB %7.1fs | %10.2fMB %7.1fs\n", r.layout, megabytes(r.size),
			megabytes(r.base), r.baseTime.Seconds(), megabytes(r.app), r.appTime.Seconds())
		b.ReportMetric(megabytes(r.base), r.layout+"-base-only-MB")
		b.ReportMetric(megabytes(r.app), r.layout+"-one-app-MB")
	}
	fmt.Println()
}
