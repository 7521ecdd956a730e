package bls

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// blsSeeds are entries as ostree, bootc and bootstore write them.
var blsSeeds = []string{
	"title Debian GNU/Linux 12 (ostree:default:0)\nversion 2\noptions root=UUID=1234 rw console=ttyS0,115200n8 ostree=/ostree/deploy/default/deploy/abc.0\nlinux /ostree/default-0123/vmlinuz-6.1.0\ninitrd /ostree/default-0123/initramfs-6.1.0.img\n",
	"# comment\ntitle Fedora Linux 41 (ostree:0)\nversion 1\nlinux /ostree/fedora-aa/vmlinuz-6.11\ninitrd /ostree/fedora-aa/initramfs-6.11.img\noptions rw\noptions foo=\"a b\" ostree=/ostree/deploy/fedora/deploy/x.1\naboot /x\n",
	"linux /vmlinuz\n",
	"linux\t/vmlinuz\r\noptions \"quoted=a b\" q\r\n",
	"title\nlinux /k\nlinux /k2\n",
	"options ostree=/a ostree=/b\nlinux /k\n",
}

// FuzzBLSEntry parses fuzzed entry files. Property: an entry that parses and
// that Write accepts is written to a file that parses back to the same
// title, kernel, initramfs, deployment and arguments (plus ostree= once).
func FuzzBLSEntry(f *testing.F) {
	for _, s := range blsSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := parseEntry(data)
		if err != nil {
			return
		}
		if e.Linux == "" {
			t.Fatalf("%q parsed without a linux line", data)
		}
		root := t.TempDir()
		for _, p := range []string{e.Linux, e.Initrd} {
			full := filepath.Join(root, "boot", filepath.FromSlash(p))
			if p == "" || !strings.HasPrefix(full, filepath.Join(root, "boot")+"/") {
				continue
			}
			if os.MkdirAll(filepath.Dir(full), 0o755) == nil {
				_ = os.WriteFile(full, []byte("k"), 0o644)
			}
		}
		out, _, err := render(root, e, 0, 1)
		if err != nil {
			return
		}
		e2, err := parseEntry(out)
		if err != nil {
			t.Fatalf("%q rendered as %q, which does not parse: %v", data, out, err)
		}
		if e2.Title != e.Title || e2.Linux != e.Linux || e2.Initrd != e.Initrd || e2.Deployment != DeploymentOf(e) {
			t.Fatalf("%q via %q: got %+v, want %+v", data, out, e2, e)
		}
		var want []string
		for _, o := range e.Options {
			if _, ok := KargValue([]string{o}, karg); !ok {
				want = append(want, o)
			}
		}
		var got []string
		n := 0
		for _, o := range e2.Options {
			if _, ok := KargValue([]string{o}, karg); ok {
				n++
				continue
			}
			got = append(got, o)
		}
		if n != 1 || !reflect.DeepEqual(got, want) {
			t.Fatalf("%q via %q: options %q (%d ostree=), want %q", data, out, e2.Options, n, want)
		}
	})
}

// FuzzKargsD parses fuzzed kargs.d files. Property: parseKargs never
// panics, and every argument it returns that a boot entry can hold
// reaches the written entry verbatim and in order.
func FuzzKargsD(f *testing.F) {
	for _, s := range []string{
		`kargs = ["console=ttyS0,115200n8"]`,
		"# base\nkargs = [\"nosmt\", \"foo=\\\"a b\\\"\"]\n",
		"kargs = [\"arm=1\"]\nmatch-architectures = [\"aarch64\"]\n",
		"kargs = [\"x86=1\"]\nmatch-architectures = [\"x86_64\", \"aarch64\"]\n",
		"kargs = []\n",
		"kargs = \"not a list\"\n",
		"kargs = [\"a\"]\nextra = 1\n",
		"[kargs]\n",
		"kargs = [\"a b\", \"\\n\", \"ostree=/x\"]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		args, err := parseKargs(data, "x86_64")
		if err != nil {
			return
		}
		root := t.TempDir()
		if err := os.MkdirAll(filepath.Join(root, "boot"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "boot", "vmlinuz"), []byte("k"), 0o644); err != nil {
			t.Fatal(err)
		}
		const dep = "/ostree/deploy/default/deploy/x.0"
		e := Entry{Linux: "/vmlinuz", Deployment: dep, Options: args}
		out, _, err := render(root, e, 0, 1)
		if err != nil {
			return // refused before anything is written; Write names the argument
		}
		e2, err := parseEntry(out)
		if err != nil {
			t.Fatalf("kargs %q rendered as %q, which does not parse: %v", args, out, err)
		}
		var want []string
		for _, a := range args {
			if a != "" && a != karg+"="+dep {
				want = append(want, a)
			}
		}
		var got []string
		for _, a := range e2.Options {
			if a != karg+"="+dep {
				got = append(got, a)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("kargs %q came back as %q via %q", args, e2.Options, out)
		}
	})
}
