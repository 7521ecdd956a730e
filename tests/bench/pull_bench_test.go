// Package bench holds the benchmarks that move hundreds of megabytes. They
// run on demand (make bench), never in CI, and print their figures.
package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/bootstore/bootstore/tests/harness"
)

// BenchmarkPullVsSkopeo pulls one ~300 MB, ~10k-file image from the local
// registry into a fresh store, through bootstore and through
// `skopeo copy ... containers-storage:`, and prints both times and the ratio.
// Override the size with BOOTSTORE_BENCH_MB and BOOTSTORE_BENCH_FILES.
func BenchmarkPullVsSkopeo(b *testing.B) {
	harness.RequireRoot(b)
	harness.RequireCommand(b, "skopeo")
	bin := buildBootstore(b)
	reg := harness.StartRegistry(b)
	size, files := envInt("BOOTSTORE_BENCH_MB", 300)<<20, envInt("BOOTSTORE_BENCH_FILES", 10000)
	img := harness.BigImage(b, int64(size), files, 1)
	reg.Push(b, img, "big:1", "gzip")
	ref := reg.Ref("big:1")
	policy := harness.PolicyFile(b)

	var bootTotal, skopeoTotal time.Duration
	for i := 0; i < b.N; i++ {
		root := freshDir(b)
		boot := timeCmd(b, exec.Command(bin, "--sysroot", root, "image", "pull", "--quiet",
			"--tls-verify=false", "--signature-policy", policy, "--allow-non-bootable", ref))
		sroot, srun := freshDir(b), freshDir(b)
		dest := fmt.Sprintf("containers-storage:[overlay@%s+%s]%s", sroot, srun, ref)
		sk := timeCmd(b, exec.Command("skopeo", "--policy", policy, "copy", "--quiet", "--src-tls-verify=false", "docker://"+ref, dest))
		bootTotal += boot
		skopeoTotal += sk
		unmountAll(root, sroot, srun)
	}
	n := time.Duration(b.N)
	fmt.Printf("pull of %d MB / %d files (gzip) from a local registry, mean of %d:\n", size>>20, files, b.N)
	fmt.Printf("  bootstore image pull:               %8.2fs\n", (bootTotal / n).Seconds())
	fmt.Printf("  skopeo copy -> containers-storage:  %8.2fs\n", (skopeoTotal / n).Seconds())
	fmt.Printf("  ratio bootstore/skopeo:             %8.2f\n", bootTotal.Seconds()/skopeoTotal.Seconds())
	b.ReportMetric((bootTotal / n).Seconds(), "bootstore-s")
	b.ReportMetric((skopeoTotal / n).Seconds(), "skopeo-s")
}

func timeCmd(b *testing.B, cmd *exec.Cmd) time.Duration {
	b.Helper()
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%v: %v\n%s", cmd.Args, err, out)
	}
	return time.Since(start)
}

func freshDir(b *testing.B) string {
	dir, err := os.MkdirTemp("", "bb")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unmountAll(dir); os.RemoveAll(dir) })
	return dir
}

func unmountAll(dirs ...string) {
	for _, d := range dirs {
		harness.UnmountUnder(d)
	}
}

func envInt(name string, def int) int {
	var v int
	if _, err := fmt.Sscan(os.Getenv(name), &v); err == nil && v > 0 {
		return v
	}
	return def
}

// buildBootstore builds the binary once per benchmark run.
func buildBootstore(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "bootstore")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-buildvcs=false", "-tags", "containers_image_openpgp,exclude_graphdriver_btrfs",
		"-o", bin, "github.com/bootstore/bootstore/cmd/bootstore")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building bootstore: %v\n%s", err, out)
	}
	return bin
}
