package bench

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bootstore/bootstore/tests/harness"
)

// BenchmarkGC fills a host's store with 50 images (the OS images of its
// deployments and their bound images, plus images nothing uses any more)
// and times `bootstore gc`, printing the bytes it freed (statfs).
//
//	go test -run '^$' -bench GC -benchtime 1x -v ./tests/bench/
func BenchmarkGC(b *testing.B) {
	harness.RequireRoot(b)
	bin := buildBootstore(b)
	reg := harness.StartRegistry(b)
	policy := harness.PolicyFile(b)
	const images = 50
	for i := 0; i < images; i++ {
		reg.Push(b, harness.AppImage(b, fmt.Sprintf("app%02d", i)), fmt.Sprintf("apps/app%02d:1", i), "gzip")
	}
	// Three OS versions, each binding three of the apps.
	for v := 0; v < 3; v++ {
		var bound []harness.Bound
		for j := 0; j < 3; j++ {
			n := fmt.Sprintf("app%02d", v*3+j)
			bound = append(bound, harness.BoundImage(n, reg.Ref("apps/"+n+":1")))
		}
		reg.Push(b, harness.OSImage(b, harness.OSImageOptions{Bootable: true, Version: fmt.Sprint(v), BoundImages: bound}), fmt.Sprintf("os:%d", v), "gzip")
	}
	for i := 0; i < b.N; i++ {
		root := freshDir(b)
		run := func(args ...string) string {
			out, err := exec.Command(bin, append([]string{"--sysroot", root}, args...)...).CombinedOutput()
			if err != nil {
				b.Fatalf("bootstore %v: %v\n%s", args, err, out)
			}
			return string(out)
		}
		flags := []string{"--tls-verify=false", "--signature-policy", policy}
		run(append(append([]string{"install", "to-filesystem", "--experimental-unified-storage", "--source-imgref", reg.Ref("os:0")}, flags...), root)...)
		for v := 1; v < 3; v++ {
			run(append([]string{"switch"}, append(flags, reg.Ref(fmt.Sprintf("os:%d", v)))...)...)
			run("internals", "finalize-staged")
			run("internals", "simulate-reboot")
		}
		for j := 0; j < images; j++ {
			run(append(append([]string{"image", "pull", "--quiet", "--allow-non-bootable"}, flags...), reg.Ref(fmt.Sprintf("apps/app%02d:1", j)))...)
		}
		count := strings.Count(run("image", "list"), "\n") - 1
		start := time.Now()
		out := run("gc")
		elapsed := time.Since(start)
		left := strings.Count(run("image", "list"), "\n") - 1
		fmt.Printf("gc of a store with %d images and 2 deployments: %.2fs, %d images left\n  %s", count, elapsed.Seconds(), left,
			out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])
		harness.UnmountUnder(root)
	}
}
