package e2e

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootstore/bootstore/tests/harness"
)

// bootstore's exit codes for a tree that cannot boot and for invalid bound
// images (cmd/bootstore/main.go).
const (
	exitNotBootableCode  = 3
	exitBoundInvalidCode = 6
)

// sentinelTree is a directory outside every test sysroot holding decoys an
// image's absolute symlinks and references point at: a kernel, a quadlet
// naming an image, a kargs.d file and an OCI layout. Nothing of it may be
// read into a host or changed: its snapshot is compared at the end, and
// each decoy carries the word "sentinel", which must never reach a host's
// files or bootstore's output.
type sentinelTree struct {
	dir    string
	before map[string]string
}

func newSentinelTree(t *testing.T) *sentinelTree {
	dir := t.TempDir()
	for rel, data := range map[string]string{
		"usr/lib/modules/9.9.9-sentinel/vmlinuz":       "sentinel kernel\n",
		"usr/lib/modules/9.9.9-sentinel/initramfs.img": "sentinel initramfs\n",
		"usr/bin/true":                 "sentinel true\n",
		"quadlets/decoy.image":         "[Image]\nImage=sentinel.invalid/decoy:1\n",
		"kargs.d/50-decoy.toml":        "kargs = [\"sentinel_karg=1\"]\n",
		"layout/oci-layout":            "{\"imageLayoutVersion\":\"1.0.0\"}\n",
		"layout/index.json":            "{\"schemaVersion\":2,\"manifests\":[]}\n",
		"etc/sentinel-must-not-change": "sentinel\n",
	} {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, p, data)
	}
	s := &sentinelTree{dir: dir}
	s.before = s.snapshot(t)
	return s
}

// snapshot is every entry's type, mode, size, content hash and mtime.
func (s *sentinelTree) snapshot(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		sum := ""
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum = fmt.Sprintf("%x", sha256.Sum256(b))
		}
		out[p] = fmt.Sprintf("%v %d %s %d", fi.Mode(), fi.Size(), sum, fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// unchanged fails the test for any entry of the tree added, removed or
// changed since newSentinelTree.
func (s *sentinelTree) unchanged(t *testing.T) {
	t.Helper()
	after := s.snapshot(t)
	for p, was := range s.before {
		if now, ok := after[p]; !ok {
			t.Errorf("sentinel %s was removed", p)
		} else if now != was {
			t.Errorf("sentinel %s changed: %s -> %s", p, was, now)
		}
	}
	for p := range after {
		if _, ok := s.before[p]; !ok {
			t.Errorf("sentinel tree gained %s", p)
		}
	}
}

// noSentinelUnder fails the test if any regular file under root holds a
// decoy's bytes ("sentinel"): nothing of the tree was read into the host.
func noSentinelUnder(t *testing.T, root string) {
	t.Helper()
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if fi, err := d.Info(); err != nil || fi.Size() > 1<<20 {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), "sentinel") {
			t.Errorf("%s holds a decoy from outside the sysroot: %q", p, b)
		}
		return nil
	})
}

// An image is content from anyone who can push to a registry. Hostile
// trees are installed one at a time: each either installs what its own
// tree says or fails with an error naming what is wrong, and nothing
// outside the sysroot is read or written.
func TestHostileImagesStayInsideTheSysroot(t *testing.T) {
	reg := harness.StartRegistry(t)
	s := newSentinelTree(t)
	reg.Push(t, harness.AppImage(t, "happ"), "apps/happ:1", "gzip")
	app := harness.BoundImage("happ", reg.Ref("apps/happ:1"))
	kdir := "/usr/lib/modules/" + harness.KernelVersion
	bound := func(name, content string) harness.Bound {
		return harness.Bound{EntryName: name + ".image", Quadlet: harness.QuadletDir + "/" + name + ".image", Content: content}
	}
	boundDir := harness.BoundImagesDir

	cases := []struct {
		name  string
		image harness.Image
		code  int      // 0: installs
		names []string // the error names these
		check func(t *testing.T, h *host)
	}{
		{
			name: "usr-is-an-absolute-symlink",
			image: harness.Image{Labels: map[string]string{"containers.bootc": "1"}, Layers: []harness.Layer{{
				{Path: "/usr", Type: harness.Symlink, Link: s.dir + "/usr"},
				{Path: "/etc", Type: harness.Dir},
				{Path: "/etc/hostname", Type: harness.File, Data: []byte("x\n")},
			}}},
			code: exitNotBootableCode, names: []string{"/usr", "symlink"},
		},
		{
			name: "usr-is-a-relative-symlink-leaving-the-image",
			image: harness.Image{Labels: map[string]string{"containers.bootc": "1"}, Layers: []harness.Layer{{
				{Path: "/usr", Type: harness.Symlink, Link: "../../../../../../.." + s.dir + "/usr"},
				{Path: "/etc", Type: harness.Dir},
			}}},
			code: exitNotBootableCode, names: []string{"/usr", "symlink"},
		},
		{
			name: "no-kernel",
			image: harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "nokernel", ExtraLayers: []harness.Layer{{
				{Path: kdir + "/vmlinuz", Type: harness.Whiteout},
			}}}),
			code: 1, names: []string{"no kernel", "usr/lib/modules"},
		},
		{
			name: "vmlinuz-is-an-absolute-symlink-out",
			image: harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "kout", ExtraLayers: []harness.Layer{{
				{Path: kdir + "/vmlinuz", Type: harness.Symlink, Link: s.dir + "/usr/lib/modules/9.9.9-sentinel/vmlinuz"},
			}}}),
			code: 1, names: []string{"no kernel"},
		},
		{
			name: "kernel-directory-is-a-symlink-out",
			image: harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "kdirout", ExtraLayers: []harness.Layer{harness.WithParents(harness.Layer{
				{Path: "/usr/lib/modules/9.9.9-sentinel", Type: harness.Symlink, Link: s.dir + "/usr/lib/modules/9.9.9-sentinel"},
			})}}),
			// The image's own kernel boots; the link names nothing inside it.
			check: func(t *testing.T, h *host) { bootEntryHas(t, h, "vmlinuz-"+harness.KernelVersion) },
		},
		{
			name: "two-kernels",
			image: harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "twok", ExtraLayers: []harness.Layer{harness.WithParents(harness.Layer{
				{Path: "/usr/lib/modules/6.0.0-9-old/vmlinuz", Type: harness.File, Data: []byte("old kernel\n")},
				{Path: "/usr/lib/modules/6.0.10-new/vmlinuz", Type: harness.File, Data: []byte("new kernel\n")},
				{Path: "/usr/lib/modules/6.0.10-new/initramfs.img", Type: harness.File, Data: []byte("new initramfs\n")},
			})}}),
			// The highest version boots, compared as rpm compares them.
			check: func(t *testing.T, h *host) { bootEntryHas(t, h, "vmlinuz-6.0.10-new") },
		},
		{
			name: "kargs.d-garbage",
			image: harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "kgarb", ExtraLayers: []harness.Layer{harness.WithParents(harness.Layer{
				{Path: "/usr/lib/bootc/kargs.d/10-bad.toml", Type: harness.File, Data: []byte("kargs = [\"quiet\", \x00\xff\n")},
			})}}),
			code: 1, names: []string{"10-bad.toml"},
		},
		{
			name: "kargs.d-wrong-type",
			image: harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "ktype", ExtraLayers: []harness.Layer{harness.WithParents(harness.Layer{
				{Path: "/usr/lib/bootc/kargs.d/10-str.toml", Type: harness.File, Data: []byte("kargs = \"quiet\"\n")},
			})}}),
			code: 1, names: []string{"10-str.toml"},
		},
		{
			name: "kargs.d-absolute-symlink-out",
			image: harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "kargout", ExtraLayers: []harness.Layer{harness.WithParents(harness.Layer{
				{Path: "/usr/lib/bootc/kargs.d/50-decoy.toml", Type: harness.Symlink, Link: s.dir + "/kargs.d/50-decoy.toml"},
			})}}),
			code: 1, names: []string{"50-decoy.toml"},
		},
		{
			name: "bound-entry-absolute-symlink-out",
			image: harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "bout", BoundImages: []harness.Bound{app}, ExtraLayers: []harness.Layer{{
				{Path: boundDir + "/decoy.image", Type: harness.Symlink, Link: s.dir + "/quadlets/decoy.image"},
			}}}),
			code: exitBoundInvalidCode, names: []string{"decoy.image"},
		},
		{
			name: "bound-entry-symlink-loop",
			image: harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "bloop", BoundImages: []harness.Bound{app}, ExtraLayers: []harness.Layer{{
				{Path: boundDir + "/a.image", Type: harness.Symlink, Link: "b.image"},
				{Path: boundDir + "/b.image", Type: harness.Symlink, Link: "a.image"},
			}}}),
			code: exitBoundInvalidCode, names: []string{"a.image", "b.image"},
		},
		{
			name:  "bound-image-empty",
			image: harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "bempty", BoundImages: []harness.Bound{app, bound("empty", "[Image]\nImage=\n")}}),
			code:  exitBoundInvalidCode, names: []string{"empty.image", "Image="},
		},
		{
			name:  "bound-image-several-lines",
			image: harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "blines", BoundImages: []harness.Bound{app, bound("lines", "[Image]\nImage="+reg.Addr+"/apps/\\\nhapp:1\n")}}),
			code:  exitBoundInvalidCode, names: []string{"lines.image"},
		},
		{
			name:  "bound-image-oci-transport-out",
			image: harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "boci", BoundImages: []harness.Bound{app, bound("local", "[Image]\nImage=oci:"+s.dir+"/layout\n")}}),
			code:  exitBoundInvalidCode, names: []string{"local.image", "transport oci: is not a registry"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHost(t)
			ref := reg.Ref("hostile/" + c.name + ":1")
			reg.Push(t, c.image, "hostile/"+c.name+":1", "gzip")
			res := h.run(h.installArgs(ref, "--experimental-unified-storage")...)
			if strings.Contains(res.stdout+res.stderr, "sentinel") {
				t.Errorf("bootstore's output names a decoy outside the sysroot:\n%s", res)
			}
			if c.code == 0 {
				if res.code != 0 {
					t.Fatalf("install failed:\n%s", res)
				}
				c.check(t, h)
			} else {
				t.Logf("install said: %s", strings.TrimSpace(res.stderr))
				if res.code != c.code {
					t.Errorf("want exit %d:\n%s", c.code, res)
				}
				for _, n := range append(c.names, ref) {
					if !strings.Contains(res.stderr, n) {
						t.Errorf("the error does not name %q:\n%s", n, res.stderr)
					}
				}
				if deps := h.deployments("default"); len(deps) != 0 {
					t.Errorf("a refused install left deployments: %v", deps)
				}
				if entries, _ := filepath.Glob(filepath.Join(h.root, "boot/loader/entries/*.conf")); len(entries) != 0 {
					t.Errorf("a refused install left boot entries: %v", entries)
				}
			}
			noSentinelUnder(t, h.root)
		})
	}
	s.unchanged(t)
}

// bootEntryHas fails the test unless the host's only boot entry contains want.
func bootEntryHas(t *testing.T, h *host, want string) {
	t.Helper()
	entries, _ := filepath.Glob(filepath.Join(h.root, "boot/loader/entries/*.conf"))
	if len(entries) != 1 {
		t.Fatalf("want one boot entry, got %v", entries)
	}
	b, err := os.ReadFile(entries[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), want) {
		t.Errorf("boot entry lacks %q:\n%s", want, b)
	}
}
