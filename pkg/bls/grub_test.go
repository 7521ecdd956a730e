package bls

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readGrubMenu reads boot/grub/grub.cfg as GRUB would: through the link.
func readGrubMenu(t *testing.T, root string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "boot", "grub", "grub.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestGrubMenuFollowsEveryWrite(t *testing.T) {
	root := t.TempDir()
	entries := testEntries(t, root, 2)
	if err := Write(root, entries); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "boot", loaderLink[len("boot/"):], "grub.cfg")); err == nil {
		t.Fatal("Write made a GRUB menu where no GRUB is installed")
	}
	if err := InstallGrubConfigLink(root); err != nil {
		t.Fatal(err)
	}
	if err := Write(root, entries); err != nil {
		t.Fatal(err)
	}
	menu := readGrubMenu(t, root)
	first := strings.Index(menu, "ostree:default:0")
	second := strings.Index(menu, "ostree:default:1")
	if first < 0 || second < first || !strings.Contains(menu, "set default=0") {
		t.Fatalf("menu does not list entry 0 then entry 1 as default:\n%s", menu)
	}
	for _, e := range entries {
		line := "linux '" + e.Linux + "' root=UUID=1234 rw foo=\"a b\" ostree=" + e.Deployment
		if !strings.Contains(menu, line) {
			t.Errorf("menu lacks %q:\n%s", line, menu)
		}
		if !strings.Contains(menu, "initrd '"+e.Initrd+"'") {
			t.Errorf("menu lacks the initrd %s", e.Initrd)
		}
	}

	// A boot-order swap (a rollback) swaps the menu with the entries.
	if err := Write(root, []Entry{entries[1], entries[0]}); err != nil {
		t.Fatal(err)
	}
	menu = readGrubMenu(t, root)
	if strings.Index(menu, "ostree:default:1") > strings.Index(menu, "ostree:default:0") {
		t.Fatalf("after the swap entry 1 is not the default:\n%s", menu)
	}
	target, err := os.Readlink(filepath.Join(root, "boot", "grub", "grub.cfg"))
	if err != nil || target != "../loader/grub.cfg" {
		t.Fatalf("boot/grub/grub.cfg is %q, %v; want the link to ../loader/grub.cfg", target, err)
	}
}

func TestGrubQuote(t *testing.T) {
	if got := grubQuote("it's"); got != `'it'\''s'` {
		t.Fatalf("grubQuote: %s", got)
	}
}
