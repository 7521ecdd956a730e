package boundimages

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const (
	bid  = "usr/lib/bootc/bound-images.d"
	qdir = "usr/share/containers/systemd"
)

// tree describes an image root (and what lies next to it) for a test.
type tree struct {
	files   map[string]string // path relative to root -> content
	links   map[string]string // path relative to root -> symlink target
	dirs    []string          // extra directories relative to root
	outside map[string]string // path relative to root's parent -> content
}

// build creates t under a fresh temporary directory and returns the root.
func (tr tree) build(t *testing.T) string {
	t.Helper()
	parent := t.TempDir()
	root := filepath.Join(parent, "root")
	mk := func(base string, files map[string]string) {
		for p, content := range files {
			full := filepath.Join(base, p)
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	mk(root, tr.files)
	mk(parent, tr.outside)
	for _, d := range tr.dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, target := range tr.links {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, full); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func imageUnit(ref string) string { return "[Image]\nImage=" + ref + "\n" }

func containerUnit(ref string) string {
	return "[Unit]\nDescription=app\n\n[Container]\nImage=" + ref + "\n\n[Install]\nWantedBy=multi-user.target\n"
}

func TestDiscover(t *testing.T) {
	tests := []struct {
		name string
		tree tree
		want []Image
	}{{
		name: "missing Dir",
		tree: tree{files: map[string]string{"usr/bin/true": ""}},
		want: nil,
	}, {
		name: "empty Dir",
		tree: tree{dirs: []string{bid}},
		want: nil,
	}, {
		name: "relative target",
		tree: tree{
			files: map[string]string{qdir + "/app.image": imageUnit("quay.io/x/app:1")},
			links: map[string]string{bid + "/app.image": "../../../share/containers/systemd/app.image"},
		},
		want: []Image{{Ref: "quay.io/x/app:1", Entry: "/" + bid + "/app.image", Quadlet: "/" + qdir + "/app.image"}},
	}, {
		name: "absolute target",
		tree: tree{
			files: map[string]string{qdir + "/app.container": containerUnit("quay.io/x/app")},
			links: map[string]string{bid + "/app.container": "/" + qdir + "/app.container"},
		},
		want: []Image{{Ref: "quay.io/x/app:latest", Entry: "/" + bid + "/app.container", Quadlet: "/" + qdir + "/app.container"}},
	}, {
		name: "chain through an intermediate directory symlink",
		tree: tree{
			files: map[string]string{
				"usr/lib/quadlets/app.container": containerUnit("quay.io/x/app:2"),
			},
			links: map[string]string{
				qdir:                   "../../lib/quadlets",
				bid + "/app.container": "/" + qdir + "/app.container",
			},
		},
		want: []Image{{Ref: "quay.io/x/app:2", Entry: "/" + bid + "/app.container", Quadlet: "/usr/lib/quadlets/app.container"}},
	}, {
		name: "absolute symlink inside the chain stays in root",
		tree: tree{
			files: map[string]string{
				"usr/lib/quadlets/app.image": imageUnit("quay.io/x/app:3"),
			},
			links: map[string]string{
				qdir + "/app.image": "/usr/lib/quadlets/app.image",
				bid + "/app.image":  "../../../share/containers/systemd/app.image",
			},
		},
		want: []Image{{Ref: "quay.io/x/app:3", Entry: "/" + bid + "/app.image", Quadlet: "/usr/lib/quadlets/app.image"}},
	}, {
		name: "dot-dot target is clamped to root",
		tree: tree{
			files:   map[string]string{"etc/x.image": imageUnit("quay.io/inside/x:1")},
			outside: map[string]string{"etc/x.image": imageUnit("quay.io/decoy/x:1")},
			links:   map[string]string{bid + "/x.image": "../../../../../etc/x.image"},
		},
		want: []Image{{Ref: "quay.io/inside/x:1", Entry: "/" + bid + "/x.image", Quadlet: "/etc/x.image"}},
	}, {
		name: "Dir itself is a symlink inside the image",
		tree: tree{
			files: map[string]string{qdir + "/app.image": imageUnit("quay.io/x/app:1")},
			links: map[string]string{
				"usr/lib/bootc":                    "/opt/bootc",
				"opt/bootc/bound-images.d/a.image": "/" + qdir + "/app.image",
			},
		},
		want: []Image{{Ref: "quay.io/x/app:1", Entry: "/" + bid + "/a.image", Quadlet: "/" + qdir + "/app.image"}},
	}, {
		name: "continuation lines and comments",
		tree: tree{
			files: map[string]string{qdir + "/app.container": "" +
				"# a comment\n" +
				"; another comment\n" +
				"[Container]\n" +
				"Exec=/bin/sh -c \\\n" +
				"  \"sleep infinity\"\n" +
				"# Image=quay.io/commented/out\n" +
				"Image=\\\n" +
				"    quay.io/x/cont:4\n" +
				"PodmanArgs=--log-level=debug \\\n" +
				"  --env=A=B\n"},
			links: map[string]string{bid + "/app.container": "/" + qdir + "/app.container"},
		},
		want: []Image{{Ref: "quay.io/x/cont:4", Entry: "/" + bid + "/app.container", Quadlet: "/" + qdir + "/app.container"}},
	}, {
		name: "quoted value, surrounding spaces",
		tree: tree{
			files: map[string]string{qdir + "/app.image": "[Image]\nImage =  \"quay.io/x/quoted\"  \nAuthFile='/etc/q auth.json'\n"},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		want: []Image{{Ref: "quay.io/x/quoted:latest", AuthFile: "/etc/q auth.json", Entry: "/" + bid + "/app.image", Quadlet: "/" + qdir + "/app.image"}},
	}, {
		name: "last assignment wins, other sections ignored",
		tree: tree{
			files: map[string]string{qdir + "/app.image": "[Unit]\nImage=quay.io/not/this\n[Image]\nImage=quay.io/x/first\nImage=quay.io/x/last:9\n[Service]\nImage=quay.io/nor/this\n"},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		want: []Image{{Ref: "quay.io/x/last:9", Entry: "/" + bid + "/app.image", Quadlet: "/" + qdir + "/app.image"}},
	}, {
		name: "normalization: short name, docker:// prefix, tag and digest",
		tree: tree{
			files: map[string]string{
				qdir + "/a.image": imageUnit("nginx"),
				qdir + "/b.image": imageUnit("docker://quay.io/x/b:1"),
				qdir + "/c.image": imageUnit("quay.io/x/c:1@sha256:" + strings.Repeat("ab", 32)),
				qdir + "/d.image": imageUnit("localhost:5000/d"),
			},
			links: map[string]string{
				bid + "/a.image": "/" + qdir + "/a.image",
				bid + "/b.image": "/" + qdir + "/b.image",
				bid + "/c.image": "/" + qdir + "/c.image",
				bid + "/d.image": "/" + qdir + "/d.image",
			},
		},
		want: []Image{
			{Ref: "docker.io/library/nginx:latest", Entry: "/" + bid + "/a.image", Quadlet: "/" + qdir + "/a.image"},
			{Ref: "quay.io/x/b:1", Entry: "/" + bid + "/b.image", Quadlet: "/" + qdir + "/b.image"},
			{Ref: "quay.io/x/c@sha256:" + strings.Repeat("ab", 32), Entry: "/" + bid + "/c.image", Quadlet: "/" + qdir + "/c.image"},
			{Ref: "localhost:5000/d:latest", Entry: "/" + bid + "/d.image", Quadlet: "/" + qdir + "/d.image"},
		},
	}, {
		name: "escaped percent",
		tree: tree{
			files: map[string]string{qdir + "/app.image": "[Image]\nImage=quay.io/x/app\nAuthFile=/etc/100%%.json\n"},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		want: []Image{{Ref: "quay.io/x/app:latest", AuthFile: "/etc/100%.json", Entry: "/" + bid + "/app.image", Quadlet: "/" + qdir + "/app.image"}},
	}, {
		name: ".container referencing .image",
		tree: tree{
			files: map[string]string{
				qdir + "/app.container": containerUnit("app.image"),
				qdir + "/app.image":     "[Image]\nImage=quay.io/x/pulled:5\nAuthFile=/etc/containers/app-auth.json\n",
			},
			links: map[string]string{bid + "/app.container": "/" + qdir + "/app.container"},
		},
		want: []Image{{Ref: "quay.io/x/pulled:5", AuthFile: "/etc/containers/app-auth.json", Entry: "/" + bid + "/app.container", Quadlet: "/" + qdir + "/app.container"}},
	}, {
		name: ".container referencing .image through symlinks, same AuthFile on both",
		tree: tree{
			files: map[string]string{
				"usr/lib/quadlets/app.container": "[Container]\nImage=app.image\nAuthFile=/etc/auth.json\n",
				"usr/lib/quadlets/real.image":    "[Image]\nImage=quay.io/x/pulled:6\nAuthFile=/etc//auth.json\n",
			},
			links: map[string]string{
				qdir:                         "/usr/lib/quadlets",
				"usr/lib/quadlets/app.image": "real.image",
				bid + "/app.container":       "/" + qdir + "/app.container",
			},
		},
		want: []Image{{Ref: "quay.io/x/pulled:6", AuthFile: "/etc/auth.json", Entry: "/" + bid + "/app.container", Quadlet: "/usr/lib/quadlets/app.container"}},
	}, {
		name: ".container referencing .image, AuthFile only on the .container",
		tree: tree{
			files: map[string]string{
				qdir + "/app.container": "[Container]\nImage=app.image\nAuthFile=/etc/c.json\n",
				qdir + "/app.image":     imageUnit("quay.io/x/pulled:7"),
			},
			links: map[string]string{bid + "/app.container": "/" + qdir + "/app.container"},
		},
		want: []Image{{Ref: "quay.io/x/pulled:7", AuthFile: "/etc/c.json", Entry: "/" + bid + "/app.container", Quadlet: "/" + qdir + "/app.container"}},
	}, {
		name: "AuthFile absolute",
		tree: tree{
			files: map[string]string{qdir + "/app.image": "[Image]\nImage=quay.io/x/app\nAuthFile=/run/secrets/auth.json\n"},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		want: []Image{{Ref: "quay.io/x/app:latest", AuthFile: "/run/secrets/auth.json", Entry: "/" + bid + "/app.image", Quadlet: "/" + qdir + "/app.image"}},
	}, {
		name: "dedupe by Ref keeps the first entry",
		tree: tree{
			files: map[string]string{
				qdir + "/a.image":     imageUnit("quay.io/x/same"),
				qdir + "/b.container": containerUnit("quay.io/x/same:latest"),
				qdir + "/c.image":     imageUnit("quay.io/x/other"),
			},
			links: map[string]string{
				bid + "/b.container": "/" + qdir + "/b.container",
				bid + "/a.image":     "/" + qdir + "/a.image",
				bid + "/c.image":     "/" + qdir + "/c.image",
			},
		},
		want: []Image{
			{Ref: "quay.io/x/same:latest", Entry: "/" + bid + "/a.image", Quadlet: "/" + qdir + "/a.image"},
			{Ref: "quay.io/x/other:latest", Entry: "/" + bid + "/c.image", Quadlet: "/" + qdir + "/c.image"},
		},
	}, {
		name: "unlinked quadlets are never read",
		tree: tree{
			files: map[string]string{
				qdir + "/app.image":    imageUnit("quay.io/x/app"),
				qdir + "/broken.image": "this is not a unit file\n",
				qdir + "/spec.image":   imageUnit("quay.io/%h/x"),
			},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		want: []Image{{Ref: "quay.io/x/app:latest", Entry: "/" + bid + "/app.image", Quadlet: "/" + qdir + "/app.image"}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := tc.tree.build(t)
			got, err := Discover(root)
			if err != nil {
				t.Fatalf("Discover: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Discover:\n got %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

func TestDiscoverInvalid(t *testing.T) {
	tests := []struct {
		name   string
		tree   tree
		wantIn []string // substrings of the error message, naming the offending files
		notIn  []string
	}{{
		name:   "regular file entry",
		tree:   tree{files: map[string]string{bid + "/app.image": imageUnit("quay.io/x/app")}},
		wantIn: []string{"/" + bid + "/app.image", "not a symlink"},
	}, {
		name:   "directory entry",
		tree:   tree{dirs: []string{bid + "/sub.image"}},
		wantIn: []string{"/" + bid + "/sub.image", "not a symlink"},
	}, {
		name: "wrong entry extension",
		tree: tree{
			files: map[string]string{qdir + "/app.image": imageUnit("quay.io/x/app")},
			links: map[string]string{bid + "/app.conf": "/" + qdir + "/app.image"},
		},
		wantIn: []string{"/" + bid + "/app.conf", ".image or .container"},
	}, {
		name: "extension alone is no name",
		tree: tree{
			files: map[string]string{qdir + "/app.image": imageUnit("quay.io/x/app")},
			links: map[string]string{bid + "/.image": "/" + qdir + "/app.image"},
		},
		wantIn: []string{"/" + bid + "/.image"},
	}, {
		name: "wrong target extension",
		tree: tree{
			files: map[string]string{qdir + "/app.conf": imageUnit("quay.io/x/app")},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.conf"},
		},
		wantIn: []string{"/" + bid + "/app.image", "/" + qdir + "/app.conf"},
	}, {
		name: "target of the other kind",
		tree: tree{
			files: map[string]string{qdir + "/app.container": containerUnit("quay.io/x/app")},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.container"},
		},
		wantIn: []string{"/" + bid + "/app.image", "/" + qdir + "/app.container", "not a .image quadlet"},
	}, {
		name: "missing Image=",
		tree: tree{
			files: map[string]string{qdir + "/app.image": "[Image]\nAuthFile=/etc/auth.json\n"},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		wantIn: []string{"/" + bid + "/app.image", "/" + qdir + "/app.image", "no Image="},
	}, {
		name: "empty section",
		tree: tree{
			files: map[string]string{qdir + "/app.container": "[Container]\n"},
			links: map[string]string{bid + "/app.container": "/" + qdir + "/app.container"},
		},
		wantIn: []string{"/" + bid + "/app.container", "/" + qdir + "/app.container", "no Image= in [Container]"},
	}, {
		name: "empty file",
		tree: tree{
			files: map[string]string{qdir + "/app.image": ""},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		wantIn: []string{"/" + bid + "/app.image", "/" + qdir + "/app.image", "no Image="},
	}, {
		name: "Image= in the wrong section",
		tree: tree{
			files: map[string]string{qdir + "/app.image": containerUnit("quay.io/x/app")},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		wantIn: []string{"/" + qdir + "/app.image", "no Image= in [Image]"},
	}, {
		name: "last assignment empty resets Image=",
		tree: tree{
			files: map[string]string{qdir + "/app.image": "[Image]\nImage=quay.io/x/app\nImage=\n"},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		wantIn: []string{"/" + qdir + "/app.image", "no Image="},
	}, {
		name: "%h specifier",
		tree: tree{
			files: map[string]string{qdir + "/app.image": imageUnit("quay.io/%h/app")},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		wantIn: []string{"/" + bid + "/app.image", "/" + qdir + "/app.image", "systemd specifiers are not supported"},
	}, {
		name: "%i specifier in AuthFile",
		tree: tree{
			files: map[string]string{qdir + "/app.image": "[Image]\nImage=quay.io/x/app\nAuthFile=/etc/%i.json\n"},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		wantIn: []string{"/" + qdir + "/app.image", "AuthFile=", "systemd specifiers are not supported"},
	}, {
		name: "lone trailing percent",
		tree: tree{
			files: map[string]string{qdir + "/app.image": imageUnit("quay.io/x/app%")},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		wantIn: []string{"/" + qdir + "/app.image", "specifiers"},
	}, {
		name: "invalid reference",
		tree: tree{
			files: map[string]string{qdir + "/app.image": imageUnit("quay.io/X/App")},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		wantIn: []string{"/" + bid + "/app.image", "/" + qdir + "/app.image", "quay.io/X/App", "not a valid image reference"},
	}, {
		name: "other transport",
		tree: tree{
			files: map[string]string{qdir + "/app.image": imageUnit("oci-archive:/tmp/app.tar")},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		wantIn: []string{"/" + qdir + "/app.image", "oci-archive:/tmp/app.tar", "transport oci-archive: is not a registry"},
	}, {
		name: "continuation inside the reference",
		tree: tree{
			files: map[string]string{qdir + "/app.image": "[Image]\nImage=quay.io/x/\\\napp\n"},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		wantIn: []string{"/" + qdir + "/app.image", "quay.io/x/ app"},
	}, {
		name: "malformed unit file: no equals sign",
		tree: tree{
			files: map[string]string{qdir + "/app.image": "[Image]\nImage quay.io/x/app\n"},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		wantIn: []string{"/" + bid + "/app.image", "/" + qdir + "/app.image", "malformed unit file"},
	}, {
		name: "malformed unit file: garbage after section",
		tree: tree{
			files: map[string]string{qdir + "/app.image": "[Image] trailing\nImage=quay.io/x/app\n"},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		wantIn: []string{"/" + qdir + "/app.image", "malformed unit file"},
	}, {
		name: "malformed unit file: unterminated section",
		tree: tree{
			files: map[string]string{qdir + "/app.image": "[Image\nImage=quay.io/x/app\n"},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		wantIn: []string{"/" + qdir + "/app.image", "malformed unit file"},
	}, {
		name: "malformed unit file: truncated key",
		tree: tree{
			files: map[string]string{qdir + "/app.image": "[Image]\nImage=quay.io/x/app\nAuth"},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		wantIn: []string{"/" + qdir + "/app.image", "malformed unit file"},
	}, {
		name: "AuthFile relative",
		tree: tree{
			files: map[string]string{qdir + "/app.image": "[Image]\nImage=quay.io/x/app\nAuthFile=auth.json\n"},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		wantIn: []string{"/" + bid + "/app.image", "/" + qdir + "/app.image", "AuthFile=auth.json", "not an absolute path"},
	}, {
		name: "dangling link",
		tree: tree{
			dirs:  []string{qdir},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/app.image"},
		},
		wantIn: []string{"/" + bid + "/app.image", "dangling symlink", "/" + qdir + "/app.image"},
	}, {
		name: "dot-dot escape does not read the decoy outside root",
		tree: tree{
			outside: map[string]string{"etc/x.image": imageUnit("quay.io/decoy/x:1")},
			links:   map[string]string{bid + "/x.image": "../../../../../etc/x.image"},
		},
		wantIn: []string{"/" + bid + "/x.image", "dangling symlink", "/etc/x.image does not exist"},
		notIn:  []string{"decoy"},
	}, {
		name: "absolute intermediate symlink does not escape root",
		tree: tree{
			outside: map[string]string{"etc/x.image": imageUnit("quay.io/decoy/x:1")},
			links: map[string]string{
				"usr/share/escape": "../../..",
				bid + "/x.image":   "/usr/share/escape/etc/x.image",
			},
		},
		wantIn: []string{"/" + bid + "/x.image", "dangling symlink"},
		notIn:  []string{"decoy"},
	}, {
		name: "target is a directory",
		tree: tree{
			dirs:  []string{qdir + "/dir.image"},
			links: map[string]string{bid + "/app.image": "/" + qdir + "/dir.image"},
		},
		wantIn: []string{"/" + bid + "/app.image", "/" + qdir + "/dir.image", "not a regular file"},
	}, {
		name: "symlink loop",
		tree: tree{
			links: map[string]string{
				qdir + "/a.image": "b.image",
				qdir + "/b.image": "a.image",
				bid + "/a.image":  "/" + qdir + "/a.image",
			},
		},
		wantIn: []string{"/" + bid + "/a.image", "too many levels of symbolic links"},
	}, {
		name:   "Dir is not a directory",
		tree:   tree{files: map[string]string{bid: "oops"}},
		wantIn: []string{"/" + bid, "not a directory"},
	}, {
		name: "same Ref, different AuthFile",
		tree: tree{
			files: map[string]string{
				qdir + "/a.image": "[Image]\nImage=quay.io/x/app\nAuthFile=/etc/a.json\n",
				qdir + "/b.image": "[Image]\nImage=quay.io/x/app:latest\n",
			},
			links: map[string]string{
				bid + "/a.image": "/" + qdir + "/a.image",
				bid + "/b.image": "/" + qdir + "/b.image",
			},
		},
		wantIn: []string{"/" + bid + "/a.image", "/" + bid + "/b.image", "quay.io/x/app:latest", "/etc/a.json"},
	}, {
		name: ".container names a missing .image",
		tree: tree{
			files: map[string]string{qdir + "/app.container": containerUnit("app.image")},
			links: map[string]string{bid + "/app.container": "/" + qdir + "/app.container"},
		},
		wantIn: []string{"/" + bid + "/app.container", "/" + qdir + "/app.container", "Image=app.image", "/" + qdir + "/app.image does not exist"},
	}, {
		name: ".container names a .image without Image=",
		tree: tree{
			files: map[string]string{
				qdir + "/app.container": containerUnit("app.image"),
				qdir + "/app.image":     "[Image]\nImageTag=quay.io/x/app\n",
			},
			links: map[string]string{bid + "/app.container": "/" + qdir + "/app.container"},
		},
		wantIn: []string{"/" + bid + "/app.container", "/" + qdir + "/app.image", "no Image= in [Image]", "named by Image= in /" + qdir + "/app.container"},
	}, {
		name: ".container names a .image with an invalid reference",
		tree: tree{
			files: map[string]string{
				qdir + "/app.container": containerUnit("app.image"),
				qdir + "/app.image":     imageUnit("quay.io/x/UPPER"),
			},
			links: map[string]string{bid + "/app.container": "/" + qdir + "/app.container"},
		},
		wantIn: []string{"/" + bid + "/app.container", "/" + qdir + "/app.image", "quay.io/x/UPPER"},
	}, {
		name: ".container and its .image disagree on AuthFile",
		tree: tree{
			files: map[string]string{
				qdir + "/app.container": "[Container]\nImage=app.image\nAuthFile=/etc/c.json\n",
				qdir + "/app.image":     "[Image]\nImage=quay.io/x/app\nAuthFile=/etc/i.json\n",
			},
			links: map[string]string{bid + "/app.container": "/" + qdir + "/app.container"},
		},
		wantIn: []string{"/" + bid + "/app.container", "/" + qdir + "/app.container", "/" + qdir + "/app.image", "/etc/c.json", "/etc/i.json"},
	}, {
		name: ".container names a .image by path",
		tree: tree{
			files: map[string]string{
				qdir + "/app.container": containerUnit("/etc/app.image"),
				"etc/app.image":         imageUnit("quay.io/x/app"),
			},
			links: map[string]string{bid + "/app.container": "/" + qdir + "/app.container"},
		},
		wantIn: []string{"/" + bid + "/app.container", "/" + qdir + "/app.container", "Image=/etc/app.image"},
	}, {
		name: ".container names a .build",
		tree: tree{
			files: map[string]string{qdir + "/app.container": containerUnit("app.build")},
			links: map[string]string{bid + "/app.container": "/" + qdir + "/app.container"},
		},
		wantIn: []string{"/" + bid + "/app.container", "/" + qdir + "/app.container", ".build"},
	}, {
		name: "every invalid entry is reported",
		tree: tree{
			files: map[string]string{
				bid + "/plain.image": "",
				qdir + "/ok.image":   imageUnit("quay.io/x/ok"),
			},
			links: map[string]string{
				bid + "/gone.image": "/nowhere.image",
				bid + "/ok.image":   "/" + qdir + "/ok.image",
			},
		},
		wantIn: []string{"/" + bid + "/plain.image", "/" + bid + "/gone.image"},
		notIn:  []string{"ok.image"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := tc.tree.build(t)
			got, err := Discover(root)
			if err == nil {
				t.Fatalf("Discover = %#v, want an error", got)
			}
			if got != nil {
				t.Errorf("Discover returned images with an error: %#v", got)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
			}
			var inv *InvalidError
			if !errors.As(err, &inv) {
				t.Errorf("errors.As(%v, *InvalidError) = false", err)
			}
			msg := err.Error()
			for _, s := range tc.wantIn {
				if !strings.Contains(msg, s) {
					t.Errorf("error %q does not contain %q", msg, s)
				}
			}
			for _, s := range tc.notIn {
				if strings.Contains(msg, s) {
					t.Errorf("error %q contains %q", msg, s)
				}
			}
			if strings.Contains(msg, root) {
				t.Errorf("error %q names host path %s; want paths inside the image", msg, root)
			}
		})
	}
}

func TestDiscoverRootErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := Discover(missing); err == nil || errors.Is(err, ErrInvalid) {
		t.Errorf("Discover(missing root) = %v, want a non-ErrInvalid error", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Discover(file); err == nil || errors.Is(err, ErrInvalid) {
		t.Errorf("Discover(file) = %v, want a non-ErrInvalid error", err)
	}
}

func TestInvalidError(t *testing.T) {
	err := error(&InvalidError{Entry: "/" + bid + "/x.image", Reason: "boom"})
	if !errors.Is(err, ErrInvalid) {
		t.Error("InvalidError does not match ErrInvalid")
	}
	if got, want := err.Error(), "invalid logically bound image /"+bid+"/x.image: boom"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestNames(t *testing.T) {
	if got := Names(nil); got != nil {
		t.Errorf("Names(nil) = %v, want nil", got)
	}
	imgs := []Image{{Ref: "quay.io/a/b:latest"}, {Ref: "quay.io/c/d:1"}}
	if got, want := Names(imgs), []string{"quay.io/a/b:latest", "quay.io/c/d:1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Names = %v, want %v", got, want)
	}
}

func TestSpecValue(t *testing.T) {
	tests := []struct {
		raw, want string
		wantErr   bool
	}{
		{raw: "quay.io/x", want: "quay.io/x"},
		{raw: `"quay.io/x"`, want: "quay.io/x"},
		{raw: `'quay.io/x'`, want: "quay.io/x"},
		{raw: `"quay.io/x'`, want: `"quay.io/x'`},
		{raw: `"`, want: `"`},
		{raw: "a%%b", want: "a%b"},
		{raw: "%%%%", want: "%%"},
		{raw: "\\\n  quay.io/x", want: "quay.io/x"},
		{raw: "quay.io/x \\", want: "quay.io/x"},
		{raw: "a%hb", wantErr: true},
		{raw: "%%%i", wantErr: true},
		{raw: "a%", wantErr: true},
	}
	for _, tc := range tests {
		got, err := specValue(tc.raw)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("specValue(%q) = %q, %v; want %q, error %v", tc.raw, got, err, tc.want, tc.wantErr)
		}
	}
}
