package sysroot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLockIsExclusiveAndReleased(t *testing.T) {
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.TryLock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.TryLock(); !errors.Is(err, ErrLocked) {
		t.Fatalf("second TryLock = %v, want ErrLocked", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := s.Lock(ctx); err == nil {
		t.Fatal("Lock succeeded while the lock was held")
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	l2, err := s.TryLock()
	if err != nil {
		t.Fatalf("TryLock after Unlock: %v", err)
	}
	l2.Unlock()
}

func TestCleanTempRemovesLeftovers(t *testing.T) {
	s, _ := New(t.TempDir())
	leftover := filepath.Join(s.TempDir(), "container_images_storage123", "1")
	if err := os.MkdirAll(filepath.Dir(leftover), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(leftover, []byte("partial blob"), 0o600)
	if err := s.CleanTemp(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(s.TempDir())
	if err != nil || len(entries) != 0 {
		t.Fatalf("after CleanTemp: %v, %v", entries, err)
	}
}

func TestPaths(t *testing.T) {
	host, _ := New("/")
	if got := host.StorageRoot(); got != "/ostree/bootc/storage" {
		t.Errorf("StorageRoot = %s", got)
	}
	if got := host.RunRoot(); got != "/run/bootstore/storage" {
		t.Errorf("RunRoot on a real host = %s", got)
	}
	test, _ := New("/tmp/x/../root")
	if got := test.RunRoot(); got != "/tmp/root/run/bootstore/storage" {
		t.Errorf("RunRoot under --sysroot = %s", got)
	}
}
