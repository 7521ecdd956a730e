package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootstore/bootstore/tests/harness"
)

// BenchmarkFleet simulates a fleet upgrading through one pull-through
// mirror: N sysroots (BOOTSTORE_FLEET_HOSTS, default 20; two on loop-mounted
// XFS with reflinks, the rest on loop-mounted ext4) behind a docker-registry
// in proxy mode in front of the origin registry (registries.conf
// [[registry.mirror]]). For gzip and for zstd:chunked layers it installs v1
// (one host, then the rest four at a time), upgrades every host at once to
// v2 against a cold mirror, then to v3 with one canary host first, and
// reports the origin's egress (blob bytes its counting proxy served, to the
// mirror or to hosts), the mirror's egress per host, the mirror's ranged
// GETs (partial pulls) and the wall time. Then (zstd:chunked) it upgrades
// every host at once to v4 and kills the mirror (SIGKILL, cutting responses
// in flight) once it has served a quarter of what the v2 upgrade took from
// it: it reports how long after the kill the last host had staged v4, and
// how many hosts needed a second `upgrade` run (as the timer would do). The
// OS image is BOOTSTORE_FLEET_MB (default 16) MB in BOOTSTORE_FLEET_FILES
// (default 400) files plus two bound app images; each version changes 5% of
// the files in place. Not in CI (make bench); with the defaults it takes
// about ten minutes on 2 busy cores:
//
//	go test -run '^$' -bench BenchmarkFleet -benchtime 1x -timeout 60m ./tests/bench/
func BenchmarkFleet(b *testing.B) {
	harness.RequireRoot(b)
	harness.RequireCommand(b, "mkfs.xfs")
	bin := buildBootstore(b)
	policy := harness.PolicyFile(b)
	hosts := envInt("BOOTSTORE_FLEET_HOSTS", 20)
	size, files := int64(envInt("BOOTSTORE_FLEET_MB", 16))<<20, envInt("BOOTSTORE_FLEET_FILES", 400)

	big1 := harness.BigImage(b, size, files, 11)
	big2, _ := harness.ChangeFilesInPlace(big1, 0.05, 12)
	big3, _ := harness.ChangeFilesInPlace(big2, 0.05, 13)
	big4, _ := harness.ChangeFilesInPlace(big3, 0.05, 14)

	origin := harness.StartRegistry(b)
	mirror := harness.StartPullThroughCache(b, origin.Addr)
	conf := harness.MirrorsConf(b, origin.Addr, mirror.Addr)

	roots := make([]string, hosts)
	for i := range roots {
		if i < 2 {
			roots[i] = harness.LoopFS(b, 1<<30, harness.MkfsXFSReflink...)
		} else {
			roots[i] = harness.LoopFS(b, 384<<20, harness.MkfsExt4...)
		}
	}
	run := func(ctx context.Context, root string, args ...string) error {
		cmd := exec.CommandContext(ctx, bin, append([]string{"--sysroot", root}, args...)...)
		cmd.Env = append(os.Environ(), "CONTAINERS_REGISTRIES_CONF="+conf)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
		}
		return nil
	}
	// onHosts runs args on the hosts listed (nil: all), jobs at a time, and
	// returns the failures by host.
	onHosts := func(only map[int]error, jobs int, args func(root string) []string) map[int]error {
		var mu sync.Mutex
		failed := map[int]error{}
		sem := make(chan struct{}, jobs)
		var wg sync.WaitGroup
		for i, root := range roots {
			if _, ok := only[i]; only != nil && !ok {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
				defer cancel()
				if err := run(ctx, root, args(root)...); err != nil {
					mu.Lock()
					failed[i] = err
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return failed
	}
	onAll := func(jobs int, args func(root string) []string) map[int]error { return onHosts(nil, jobs, args) }
	mustAll := func(what string, failed map[int]error) {
		for i, err := range failed {
			b.Fatalf("%s on host %d: %v", what, i, err)
		}
	}
	upgrade := func(string) []string { return []string{"upgrade", "--quiet", "--signature-policy", policy} }
	finalize := func(root string) {
		for _, step := range []string{"finalize-staged", "simulate-reboot"} {
			if err := run(context.Background(), root, "internals", step); err != nil {
				b.Fatal(err)
			}
		}
	}

	// phase is one fleet-wide upgrade.
	type phase struct {
		origin, mirror int64 // blob bytes each proxy served
		ranged         int   // ranged GETs the mirror served
		wall           time.Duration
	}
	type row struct {
		format              string
		imageBytes, install int64
		cold, warm          phase
		failAfter, failWall time.Duration
		failOrigin, failMir int64
		retried             int
	}
	rest := map[int]error{}
	for i := 1; i < hosts; i++ {
		rest[i] = nil
	}
	first := map[int]error{0: nil}
	var rows []row
	for i := 0; i < b.N; i++ {
		rows = rows[:0]
		for _, format := range []string{"gzip", "zstd:chunked"} {
			ns := strings.ReplaceAll(format, ":", "-")
			app1, app2 := harness.AppImage(b, "app1-"+ns), harness.AppImage(b, "app2-"+ns)
			origin.Push(b, app1, ns+"/app1:1", format)
			origin.Push(b, app2, ns+"/app2:1", format)
			bound := []harness.Bound{harness.BoundImage("app1", origin.Ref(ns+"/app1:1")), harness.BoundContainer("app2", origin.Ref(ns+"/app2:1"))}
			push := func(v string, big harness.Image) {
				origin.Push(b, harness.OSImage(b, harness.OSImageOptions{Bootable: true, Version: v, BoundImages: bound, ExtraLayers: big.Layers}),
					ns+"/os:latest", format)
			}
			osRef := origin.Ref(ns + "/os:latest")
			r := row{format: format}
			push("1", big1)
			r.imageBytes = layersSize(b, origin, ns+"/os", "latest")

			// A factory installs one host first (warming the mirror), then
			// the rest four at a time.
			origin.ResetStats()
			install := func(root string) []string {
				return []string{"install", "to-filesystem", "--signature-policy", policy, "--source-imgref", osRef,
					"--experimental-unified-storage", "--replace=wipe", root}
			}
			mustAll("install v1 (first host)", onHosts(first, 1, install))
			mustAll("install v1", onHosts(rest, 4, install))
			r.install = origin.Stats().BlobBytes

			measure := func(f func()) phase {
				origin.ResetStats()
				mirror.ResetStats()
				t0 := time.Now()
				f()
				m := mirror.Stats()
				p := phase{origin: origin.Stats().BlobBytes, mirror: m.BlobBytes, ranged: m.RangeGETs, wall: time.Since(t0)}
				for _, root := range roots {
					finalize(root)
				}
				return p
			}
			// v2: every host at once against a cold mirror.
			push("2", big2)
			r.cold = measure(func() { mustAll("upgrade to v2", onAll(hosts, upgrade)) })
			// v3: one canary host first, then the rest at once.
			push("3", big3)
			r.warm = measure(func() {
				mustAll("upgrade to v3 (canary)", onHosts(first, 1, upgrade))
				mustAll("upgrade to v3", onHosts(rest, hosts, upgrade))
			})

			// v4, and the mirror dies mid-run (only once: it stays dead).
			if format == "zstd:chunked" {
				push("4", big4)
				origin.ResetStats()
				mirror.ResetStats()
				expected := r.cold.mirror
				killed := make(chan time.Time, 1)
				done := make(chan struct{})
				go func() {
					for {
						select {
						case <-done:
							killed <- time.Time{}
							return
						case <-time.After(20 * time.Millisecond):
						}
						if mirror.Stats().BlobBytes >= expected/4 {
							mirror.Kill()
							killed <- time.Now()
							return
						}
					}
				}()
				t0 := time.Now()
				failed := onAll(hosts, upgrade)
				close(done)
				at := <-killed
				r.retried = len(failed)
				if len(failed) > 0 {
					b.Logf("%d hosts failed their first run after the mirror died, e.g.: %v", len(failed), firstErr(failed))
					mustAll("upgrade to v4, second run", onHosts(failed, hosts, upgrade))
				}
				end := time.Now()
				r.failWall = end.Sub(t0)
				if !at.IsZero() {
					r.failAfter = end.Sub(at)
				}
				r.failOrigin, r.failMir = origin.Stats().BlobBytes, mirror.Stats().BlobBytes
			}
			rows = append(rows, r)
		}
	}

	fmt.Printf("\nFleet of %d sysroots (2 XFS, %d ext4, loop devices), OS image %d MB in %d files + 2 bound images; each version changes 5%% of the files in place.\n",
		hosts, hosts-2, size>>20, files)
	fmt.Printf("Origin: docker-registry behind a counting proxy; mirror: docker-registry in proxy mode in front of it (registries.conf mirror). 2 CPUs shared.\n")
	fmt.Printf("Egress: blob bytes (layers, configs) each counting proxy served. install: one host, then the rest 4 at a time.\n\n")
	fmt.Printf("%-13s %9s %9s | %-26s %9s %9s %7s %8s\n", "layers", "OS size", "install", "upgrade", "origin", "mirror/h", "ranged", "wall")
	for _, r := range rows {
		for j, p := range []phase{r.cold, r.warm} {
			what := []string{"v1→v2 all at once, cold", "v2→v3 canary, then the rest"}[j]
			if j == 0 {
				fmt.Printf("%-13s %9s %9s | %-26s %9s %9s %7d %8s\n", r.format, mb(r.imageBytes), mb(r.install), what, mb(p.origin), mb(p.mirror/int64(hosts)), p.ranged, p.wall.Round(100*time.Millisecond))
			} else {
				fmt.Printf("%-13s %9s %9s | %-26s %9s %9s %7d %8s\n", "", "", "", what, mb(p.origin), mb(p.mirror/int64(hosts)), p.ranged, p.wall.Round(100*time.Millisecond))
			}
		}
	}
	for _, r := range rows {
		if r.failWall > 0 {
			fmt.Printf("\nv3→v4 (%s), all at once, the mirror killed (SIGKILL) once it had served a quarter of the v1→v2 bytes: wall %s,\n"+
				"last host staged %s after the kill, %d hosts needed a second run; the origin served %s, the mirror %s.\n",
				r.format, r.failWall.Round(100*time.Millisecond), r.failAfter.Round(100*time.Millisecond), r.retried, mb(r.failOrigin), mb(r.failMir))
		}
	}
}

func firstErr(m map[int]error) error {
	for _, err := range m {
		return err
	}
	return nil
}
