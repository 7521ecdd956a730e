package bls

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func writeKargs(t *testing.T, tree string, files map[string]string) {
	t.Helper()
	dir := filepath.Join(tree, KargsDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadKargsD(t *testing.T) {
	tree := t.TempDir()
	if got, err := ReadKargsD(tree, "amd64"); err != nil || got != nil {
		t.Fatalf("no kargs.d: %v, %v", got, err)
	}
	writeKargs(t, tree, map[string]string{
		"20-b.toml":   `kargs = ["console=ttyS0,115200n8"]`,
		"10-a.toml":   "# base\nkargs = [\"nosmt\", \"foo=\\\"a b\\\"\"]\n",
		"15-arm.toml": "kargs = [\"arm=1\"]\nmatch-architectures = [\"aarch64\"]\n",
		"16-x86.toml": "kargs = [\"x86=1\"]\nmatch-architectures = [\"x86_64\", \"aarch64\"]\n",
		"README":      "not toml",
	})
	got, err := ReadKargsD(tree, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"nosmt", `foo="a b"`, "x86=1", "console=ttyS0,115200n8"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("amd64: %q, want %q", got, want)
	}
	got, err = ReadKargsD(tree, "arm64")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"nosmt", `foo="a b"`, "arm=1", "x86=1", "console=ttyS0,115200n8"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("arm64: %q, want %q", got, want)
	}
}

func TestReadKargsDErrorsNameTheFile(t *testing.T) {
	for name, content := range map[string]string{
		"unknown.toml":   "kargs = [\"a\"]\narch = [\"x86_64\"]\n",
		"malformed.toml": "kargs = [\"a\"\n",
		"nokargs.toml":   "match-architectures = [\"x86_64\"]\n",
		"wrongtype.toml": "kargs = \"a b\"\n",
	} {
		tree := t.TempDir()
		writeKargs(t, tree, map[string]string{"00-good.toml": `kargs = ["ok"]`, name: content})
		_, err := ReadKargsD(tree, "amd64")
		if err == nil || !strings.Contains(err.Error(), "/"+KargsDir+"/"+name) {
			t.Errorf("%s: err = %v, want an error naming the file", name, err)
		}
	}
}

func TestRustArch(t *testing.T) {
	for goarch, want := range map[string]string{"amd64": "x86_64", "arm64": "aarch64", "s390x": "s390x", "riscv64": "riscv64", "ppc64le": "powerpc64"} {
		if got := RustArch(goarch); got != want {
			t.Errorf("RustArch(%q) = %q, want %q", goarch, got, want)
		}
	}
}

func TestParseCmdline(t *testing.T) {
	cmdline := "BOOT_IMAGE=(hd0,gpt3)/ostree/default-abc/vmlinuz-6.1 root=UUID=12  rw\tfoo=\"a b  c\" \"bar=x y\" quiet ostree=/ostree/deploy/default/deploy/abc.0\n"
	got := ParseCmdline(cmdline)
	want := []string{"BOOT_IMAGE=(hd0,gpt3)/ostree/default-abc/vmlinuz-6.1", "root=UUID=12", "rw", `foo="a b  c"`, `"bar=x y"`, "quiet", "ostree=/ostree/deploy/default/deploy/abc.0"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseCmdline:\n got %q\nwant %q", got, want)
	}
	if got := ParseCmdline(" \n"); got != nil {
		t.Fatalf("empty cmdline: %q", got)
	}
	if got := ParseCmdline(`a="unterminated b`); !reflect.DeepEqual(got, []string{`a="unterminated b`}) {
		t.Fatalf("unterminated quote: %q", got)
	}

	for _, c := range []struct {
		key, value string
		ok         bool
	}{
		{"foo", "a b  c", true},
		{"bar", "x y", true},
		{"quiet", "", true},
		{"root", "UUID=12", true},
		{"ostree", "/ostree/deploy/default/deploy/abc.0", true},
		{"missing", "", false},
		{"roo", "", false},
	} {
		v, ok := KargValue(got, c.key)
		if v != c.value || ok != c.ok {
			t.Errorf("KargValue(%q) = %q, %v; want %q, %v", c.key, v, ok, c.value, c.ok)
		}
	}
	if v, _ := KargValue([]string{"console=tty0", "console=ttyS0"}, "console"); v != "ttyS0" {
		t.Errorf("repeated key: %q, want the last", v)
	}
}
