package deploy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
	"golang.org/x/sys/unix"
)

func TestPerf(t *testing.T) {
	dir := t.TempDir()
	var roots []string
	for li := range 3 {
		l := newLayer(t, dir, fmt.Sprintf("L%d", li))
		for d := range 200 {
			must(t, os.MkdirAll(l.p(fmt.Sprintf("usr/d%d/sub", d)), 0o755))
			for f := range 100 {
				must(t, os.WriteFile(l.p(fmt.Sprintf("usr/d%d/sub/f%d", d, f)), []byte("hello world content"), 0o644))
			}
		}
		roots = append(roots, l.root)
	}
	unix.Sync()
	for _, w := range []int{2} {
		dst := filepath.Join(dir, "dst")
		start := time.Now()
		_, err := Build(context.Background(), roots, dst, Options{Workers: w})
		must(t, err)
		t.Logf("workers=%d %v", w, time.Since(start))
		os.RemoveAll(dst)
		s := time.Now(); unix.Sync(); t.Logf("sync %v", time.Since(s))
	}
}
