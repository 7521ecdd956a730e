package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bootstore/bootstore/tests/harness"
)

// BenchmarkPartial measures, through the harness's counting proxy, what a
// v1→v2 `bootstore upgrade` fetches and how long it takes when the OS
// image's layers are gzip, zstd, zstd:chunked or eStargz. v1 is an OS image
// of ~300 MB and ~10k files (BOOTSTORE_BENCH_MB, BOOTSTORE_BENCH_FILES); v2
// changes 2% of the files inside their layers, as a rebuild does. It then
// pulls, into the upgraded store, an LBI whose files are mostly files of the
// OS image. Every host is fresh; v1 is installed with
// `install to-filesystem --experimental-unified-storage`; the upgrade's time
// includes staging the v2 deployment. gzip, zstd and zstd:chunked are
// pushed with containers/image, eStargz with `bootstore image push`.
func BenchmarkPartial(b *testing.B) {
	harness.RequireRoot(b)
	bin := buildBootstore(b)
	reg := harness.StartRegistry(b)
	policy := harness.PolicyFile(b)
	size, files := envInt("BOOTSTORE_BENCH_MB", 300)<<20, envInt("BOOTSTORE_BENCH_FILES", 10000)

	big := harness.BigImage(b, int64(size), files, 1)
	bigV2, changed := harness.ChangeFilesInPlace(big, 0.02, 2)
	v1 := harness.OSImage(b, harness.OSImageOptions{Bootable: true, Version: "1", ExtraLayers: big.Layers})
	v2 := harness.OSImage(b, harness.OSImageOptions{Bootable: true, Version: "2", ExtraLayers: bigV2.Layers})
	lbi := lbiFromOS(b, bigV2, 3)
	layout := filepath.Join(freshDir(b), "layout")
	start := time.Now()
	for tag, img := range map[string]harness.Image{"v1": v1, "v2": v2, "lbi": lbi} {
		if err := img.WriteOCILayout(layout, tag); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("wrote the OCI layouts in %v", time.Since(start).Round(time.Second))

	type row struct {
		format                          string
		push                            time.Duration
		v2Size                          int64
		upBytes, upRanged, lbiBytes     int64
		upTime, lbiTime                 time.Duration
		partialLayers, layers, lbiParts int
	}
	var rows []row
	for i := 0; i < b.N; i++ {
		rows = rows[:0]
		for _, format := range []string{"gzip", "zstd", "zstd:chunked", "estargz"} {
			repo := "os-" + strings.ReplaceAll(format, ":", "-")
			r := row{format: format}
			push := func(tag, repoTag string) {
				t0 := time.Now()
				if format == "estargz" {
					runBootstore(b, bin, "--sysroot", freshDir(b), "image", "push", "--quiet", "--tls-verify=false", "--signature-policy", policy,
						"--compression-format", "estargz", "oci:"+layout+":"+tag, reg.Ref(repoTag))
				} else {
					reg.PushOCI(b, layout, tag, repoTag, format)
				}
				r.push += time.Since(t0)
			}
			push("v1", repo+":latest")
			push("lbi", repo+"-lbi:1")

			root := freshDir(b)
			runBootstore(b, bin, "--sysroot", root, "install", "to-filesystem", "--tls-verify=false", "--signature-policy", policy,
				"--source-imgref", reg.Ref(repo+":latest"), "--experimental-unified-storage", root)
			push("v2", repo+":latest")
			r.v2Size = layersSize(b, reg, repo, "latest")

			reg.ResetStats()
			t0 := time.Now()
			runBootstore(b, bin, "--sysroot", root, "upgrade", "--quiet", "--tls-verify=false", "--signature-policy", policy)
			r.upTime = time.Since(t0)
			st := reg.Stats()
			r.upBytes, r.upRanged = st.BlobBytes, int64(st.RangeGETs)
			r.partialLayers, r.layers = partialLayers(b, bin, root, reg.Ref(repo+":latest"))

			reg.ResetStats()
			t0 = time.Now()
			runBootstore(b, bin, "--sysroot", root, "image", "pull", "--quiet", "--tls-verify=false", "--signature-policy", policy,
				"--allow-non-bootable", reg.Ref(repo+"-lbi:1"))
			r.lbiTime = time.Since(t0)
			r.lbiBytes = reg.Stats().BlobBytes
			r.lbiParts, _ = partialLayers(b, bin, root, reg.Ref(repo+"-lbi:1"))
			rows = append(rows, r)
			unmountAll(root)
			os.RemoveAll(root)
		}
	}

	var gzipFull int64
	for _, r := range rows {
		if r.format == "gzip" {
			gzipFull = r.v2Size
		}
	}
	lbiSize := 0
	for _, l := range lbi.Layers {
		for _, e := range l {
			lbiSize += int(e.Size) + len(e.Data)
		}
	}
	fmt.Printf("\nv1→v2 upgrade of a %d MB / %d-file OS image (%d files = %.1f%% changed in place), and an LBI of %.0f MB whose files are %.0f%% OS files,\n",
		size>>20, files, len(changed), 100*float64(len(changed))/float64(files), float64(lbiSize)/(1<<20), 100*lbiShare)
	fmt.Printf("through the counting proxy from a local docker-registry; 2 CPUs. Bytes are blob bytes the proxy served.\n\n")
	fmt.Printf("%-13s %10s %10s %10s %9s %8s %9s | %10s %8s %8s | %8s\n",
		"layers", "v2 size", "upgrade", "% of gzip", "ranged", "time", "partial", "LBI pull", "time", "partial", "push")
	for _, r := range rows {
		fmt.Printf("%-13s %8.1fMB %8.2fMB %9.2f%% %9d %7.1fs %5d/%-3d | %8.2fMB %7.1fs %8d | %7.1fs\n",
			r.format, megabytes(r.v2Size), megabytes(r.upBytes), 100*float64(r.upBytes)/float64(gzipFull), r.upRanged, r.upTime.Seconds(),
			r.partialLayers, r.layers, megabytes(r.lbiBytes), r.lbiTime.Seconds(), r.lbiParts, r.push.Seconds())
		b.ReportMetric(megabytes(r.upBytes), strings.ReplaceAll(r.format, ":", "-")+"-upgrade-MB")
	}
	fmt.Println()
}

// lbiShare is the share of an LBI's files that are OS files.
const lbiShare = 0.95

// lbiFromOS is a one-layer app image holding the regular files of os's
// layer n (the same paths, contents and modes) plus new files worth 1/19 of
// them, so that 95% of its files are in the OS image.
func lbiFromOS(t testing.TB, os harness.Image, n int) harness.Image {
	var l harness.Layer
	var bytes int64
	count := 0
	for _, e := range os.Layers[n] {
		if e.Type == harness.File {
			l = append(l, e)
			bytes += e.Size
			count++
		}
	}
	extra := harness.BigImage(t, int64(float64(bytes)*(1-lbiShare)/lbiShare), max(1, int(float64(count)*(1-lbiShare)/lbiShare)), 99)
	for _, el := range extra.Layers {
		for _, e := range el {
			if e.Type == harness.File {
				e.Path = "/usr/lib/lbi" + e.Path
				l = append(l, e)
			}
		}
	}
	return harness.Image{Layers: []harness.Layer{harness.WithParents(l)}, Labels: map[string]string{"bench": "lbi"}, Cmd: []string{"/usr/bin/true"}}
}

func runBootstore(b *testing.B, bin string, args ...string) string {
	b.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		b.Fatalf("bootstore %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// layersSize sums the layer sizes in the manifest of repo:tag.
func layersSize(b *testing.B, reg *harness.Registry, repo, tag string) int64 {
	b.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+reg.DirectAddr+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatalf("manifest %s:%s: %v", repo, tag, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("manifest %s:%s: %s %v", repo, tag, resp.Status, err)
	}
	var m struct{ Layers []struct{ Size int64 } }
	if err := json.Unmarshal(out, &m); err != nil {
		b.Fatal(err)
	}
	var n int64
	for _, l := range m.Layers {
		n += l.Size
	}
	return n
}

// partialLayers counts the layers of image name that `image list` reports
// as pulled partially, and all its layers.
func partialLayers(b *testing.B, bin, root, name string) (partial, all int) {
	b.Helper()
	var infos []struct {
		Names  []string
		Layers []struct{ Partial bool }
	}
	if err := json.Unmarshal([]byte(runBootstore(b, bin, "--sysroot", root, "image", "list", "--format", "json")), &infos); err != nil {
		b.Fatal(err)
	}
	for _, i := range infos {
		if slices.Contains(i.Names, name) {
			for _, l := range i.Layers {
				if l.Partial {
					partial++
				}
			}
			return partial, len(i.Layers)
		}
	}
	b.Fatalf("image list does not show %s", name)
	return 0, 0
}

func megabytes(n int64) float64 { return float64(n) / (1 << 20) }
