package bootloader

import (
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// hostGrub is Debian's grub-pc-bin module directory, standing in for a
// deployment's.
const hostGrub = "/usr/lib/grub/i386-pc"

func TestInstallBIOSPatchesBootAndCoreImages(t *testing.T) {
	if _, err := exec.LookPath("grub-mkimage"); err != nil {
		t.Skip("grub-mkimage is not installed")
	}
	if _, err := os.Stat(filepath.Join(hostGrub, "boot.img")); err != nil {
		t.Skip("grub-pc-bin is not installed")
	}
	deployment := t.TempDir()
	os.MkdirAll(filepath.Join(deployment, "usr/lib/grub"), 0o755)
	if err := os.Symlink(hostGrub, filepath.Join(deployment, ModulesDir)); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(t.TempDir(), "disk.img")
	mbr := make([]byte, 4<<20)
	// A protective MBR entry and signature that must survive.
	copy(mbr[0x1be:], []byte{0x00, 0x00, 0x02, 0x00, 0xee, 0xff, 0xff, 0xff, 0x01, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	mbr[510], mbr[511] = 0x55, 0xaa
	if err := os.WriteFile(disk, mbr, 0o644); err != nil {
		t.Fatal(err)
	}
	const start, sectors = 2048, 2048
	if err := InstallBIOS(context.Background(), BIOSOptions{Disk: disk, BIOSBootStart: start, BIOSBootSectors: sectors,
		BootUUID: "0f0e0d0c-0b0a-0908-0706-050403020100", Deployment: deployment}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	if v := binary.LittleEndian.Uint64(got[kernelSectorOffset:]); v != start {
		t.Errorf("boot.img's kernel sector is %d, want %d", v, start)
	}
	if got[0x1c2] != 0xee || got[510] != 0x55 || got[511] != 0xaa {
		t.Errorf("the protective MBR's partition entry or signature was lost")
	}
	boot, _ := os.ReadFile(filepath.Join(hostGrub, "boot.img"))
	if string(got[:kernelSectorOffset]) != string(boot[:kernelSectorOffset]) {
		t.Errorf("boot.img's code before the patched fields differs")
	}
	core := got[start*sectorSize:]
	if v := binary.LittleEndian.Uint64(core[blocklistOffset:]); v != start+1 {
		t.Errorf("core.img's blocklist starts at %d, want %d", v, start+1)
	}
	n := binary.LittleEndian.Uint16(core[blocklistOffset+8:])
	if n == 0 || n >= sectors {
		t.Errorf("core.img's blocklist length %d", n)
	}
	if seg := binary.LittleEndian.Uint16(core[blocklistOffset+10:]); seg != kernelSegment {
		t.Errorf("core.img's load segment %#x", seg)
	}

	if err := InstallBIOS(context.Background(), BIOSOptions{Disk: disk, BIOSBootStart: start, BIOSBootSectors: 4,
		BootUUID: "x", Deployment: deployment}); err == nil {
		t.Error("a 4-sector BIOS boot partition was accepted")
	}
}
