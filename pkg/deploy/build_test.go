package deploy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// manyFiles writes a layer with n files in 10 directories.
func manyFiles(t *testing.T, dir string, n int) layer {
	l := newLayer(t, dir, "L1")
	for i := range n {
		l.file(fmt.Sprintf("d%d/f%d", i%10, i), strings.Repeat("x", i))
	}
	return l
}

// Cancelling midway leaves neither dst nor a temporary tree.
func TestCancelLeavesNothing(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	l := manyFiles(t, dir, 500)
	out := filepath.Join(dir, "out")
	must(t, os.Mkdir(out, 0o755))
	dst := filepath.Join(out, "dst")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int64
	c := ClonerFunc(func(src, dst string, shared bool) error {
		if calls.Add(1) == 50 {
			cancel()
		}
		return copyViaLink(src, dst)
	})
	start := time.Now()
	_, err := Build(ctx, []string{l.root}, dst, Options{Cloner: c, Workers: 4})
	t.Logf("cancelled after %d clones in %v: %v", calls.Load(), time.Since(start), err)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if n := calls.Load(); n >= 500 {
		t.Errorf("%d clones: the build went on after cancel", n)
	}
	if s := siblings(t, dst); len(s) != 0 {
		t.Errorf("left behind: %q", s)
	}
}

func copyViaLink(src, dst string) error {
	return unix.Linkat(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, 0)
}

// A failing file names its layer and path, and nothing is left behind.
func TestErrorNamesLayerAndPath(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	l := manyFiles(t, dir, 100)
	out := filepath.Join(dir, "out")
	must(t, os.Mkdir(out, 0o755))
	dst := filepath.Join(out, "dst")
	boom := errors.New("boom")
	c := ClonerFunc(func(src, dst string, shared bool) error {
		if strings.HasSuffix(src, "/f42") {
			return boom
		}
		return copyViaLink(src, dst)
	})
	_, err := Build(context.Background(), []string{l.root}, dst, Options{Cloner: c})
	var de *Error
	if !errors.As(err, &de) || !errors.Is(err, boom) || de.Layer != l.root || de.Path != "/d2/f42" {
		t.Fatalf("err = %#v (%v)", err, err)
	}
	if s := siblings(t, dst); len(s) != 0 {
		t.Errorf("left behind: %q", s)
	}
}

// Mutable files never reach the cloner: even one that hardlinks everything
// leaves /etc a private copy.
func TestMutableFilesBypassTheCloner(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	l := newLayer(t, dir, "L1").file("etc/x", "x")
	var calls atomic.Int64
	c := ClonerFunc(func(src, dst string, shared bool) error { calls.Add(1); return copyViaLink(src, dst) })
	dst := filepath.Join(dir, "dst")
	if _, err := Build(context.Background(), []string{l.root}, dst, Options{Cloner: c}); err != nil {
		t.Fatal(err)
	}
	var a, b unix.Stat_t
	must(t, unix.Stat(filepath.Join(dst, "etc/x"), &a))
	must(t, unix.Stat(filepath.Join(l.root, "etc/x"), &b))
	if a.Ino == b.Ino || calls.Load() != 0 {
		t.Errorf("/etc/x shares the layer's inode (%v) or went through the cloner (%d calls)", a.Ino == b.Ino, calls.Load())
	}
}

func TestBadInput(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	l := newLayer(t, dir, "L1").file("a", "a")
	ctx := context.Background()
	if _, err := Build(ctx, nil, filepath.Join(dir, "x"), Options{}); err == nil {
		t.Error("no layers accepted")
	}
	if _, err := Build(ctx, []string{l.root}, l.root, Options{}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("existing dst: %v", err)
	}
	missing := filepath.Join(dir, "missing")
	_, err := Build(ctx, []string{l.root, missing}, filepath.Join(dir, "x"), Options{})
	var de *Error
	if !errors.As(err, &de) || de.Layer != missing || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing layer: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "x")); err == nil {
		t.Error("dst created")
	}

	// Layers written by an overlay upper with metacopy are refused.
	l2 := newLayer(t, dir, "L2").file("m", "").xattr("m", "trusted.overlay.metacopy", "")
	_, err = Build(ctx, []string{l.root, l2.root}, filepath.Join(dir, "y"), Options{})
	if !errors.Is(err, ErrUnsupported) || !errors.As(err, &de) || de.Path != "/m" {
		t.Errorf("metacopy: %v", err)
	}
	if s := siblings(t, filepath.Join(dir, "y"), "L1", "L2"); len(s) != 0 {
		t.Errorf("left behind: %q", s)
	}
}

func TestRemoveLeftovers(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "dep.0")
	for _, name := range []string{"dep.0.tmp-123/a/b", "dep.0.tmp-9", "dep.1.tmp-1", "dep.0"} {
		must(t, os.MkdirAll(filepath.Join(dir, name), 0o755))
	}
	must(t, RemoveLeftovers(dst))
	if s := siblings(t, dst); strings.Join(s, " ") != "dep.0 dep.1.tmp-1" {
		t.Errorf("left: %q", s)
	}
	must(t, RemoveLeftovers(filepath.Join(dir, "nope", "x")))
}
