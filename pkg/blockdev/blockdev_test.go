package blockdev

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestPartitionDiskWritesBootcLayout(t *testing.T) {
	if _, err := exec.LookPath("sgdisk"); err != nil {
		t.Skip("sgdisk (gdisk) is not installed")
	}
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 4<<30); err != nil {
		t.Fatal(err)
	}
	if err := CheckEmpty(disk); err != nil {
		t.Fatalf("a zeroed disk: %v", err)
	}
	l, err := PartitionDisk(context.Background(), disk)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckEmpty(disk); !errors.Is(err, ErrInUse) {
		t.Fatalf("a partitioned disk: %v, want ErrInUse", err)
	}
	out, err := exec.Command("sgdisk", "--print", disk).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range l.Partitions() {
		if !strings.Contains(string(out), p.Name) || !strings.Contains(string(out), p.TypeCode) {
			t.Errorf("partition %d (%s, %s) missing:\n%s", p.Number, p.Name, p.TypeCode, out)
		}
		if p.Start%mib != 0 {
			t.Errorf("partition %d starts at sector %d, not 1 MiB aligned", p.Number, p.Start)
		}
	}
	if end := (l.Root.Start + l.Root.Length) * SectorSize; end > 4<<30-34*SectorSize {
		t.Errorf("root ends at byte %d, over the backup GPT", end)
	}

	small := filepath.Join(t.TempDir(), "small.img")
	os.WriteFile(small, nil, 0o644)
	os.Truncate(small, 1<<30)
	if _, err := PartitionDisk(context.Background(), small); err == nil || !strings.Contains(err.Error(), "too small") {
		t.Errorf("a 1 GiB disk: %v", err)
	}
}

func TestMkfsRefusesUnknownFilesystem(t *testing.T) {
	if _, err := Mkfs(context.Background(), "/dev/null", "zfs", "root"); err == nil || !strings.Contains(err.Error(), `"zfs"`) {
		t.Fatalf("Mkfs zfs: %v", err)
	}
}

func TestMkfsVerity(t *testing.T) {
	if _, err := Mkfs(context.Background(), "/dev/null", "xfs", "root", Verity); err == nil || !strings.Contains(err.Error(), "xfs has no fs-verity") {
		t.Errorf("Mkfs xfs with verity: %v", err)
	}
	for _, c := range []string{"mkfs.ext4", "dumpe2fs", "blkid"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("needs %s (e2fsprogs, util-linux)", c)
		}
	}
	img := filepath.Join(t.TempDir(), "root.img")
	os.WriteFile(img, nil, 0o644)
	os.Truncate(img, 64<<20)
	if _, err := Mkfs(context.Background(), img, "ext4", "root", Verity); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("dumpe2fs", "-h", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), " verity") {
		t.Errorf("the ext4 made with Verity lacks the verity feature:\n%s", out)
	}
}
