package harness

import (
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"
)

func heap(t *testing.T, what string) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	t.Logf("%s: heap sys %d MB, total alloc %d MB", what, m.HeapSys>>20, m.TotalAlloc>>20)
}

func TestScratchBig(t *testing.T) {
	reg := StartRegistry(t)
	img := BigImage(t, 300<<20, 3000, 7)
	start := time.Now()
	if err := img.WriteOCILayout(t.TempDir(), "x"); err != nil {
		t.Fatal(err)
	}
	t.Logf("layout %v", time.Since(start))
	heap(t, "layout")
	start = time.Now()
	reg.Push(t, img, "big:v0", "gzip")
	t.Logf("push gzip %v", time.Since(start))
	heap(t, "gzip")
	start = time.Now()
	reg.Push(t, img, "big:v1", "zstd:chunked")
	t.Logf("push zstd:chunked %v", time.Since(start))
	heap(t, "chunked")
	f, _ := os.Create("/tmp/heap.prof")
	pprof.Lookup("allocs").WriteTo(f, 0)
	f.Close()
}
