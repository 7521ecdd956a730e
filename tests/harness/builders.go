package harness

import (
	"fmt"
	"path"
	"path/filepath"
	"testing"
)

// KernelVersion is the kernel directory OSImage ships under /usr/lib/modules.
const KernelVersion = "6.0.0-bootstore"

// BoundImagesDir is where bootc looks for logically bound image symlinks.
const BoundImagesDir = "/usr/lib/bootc/bound-images.d"

// QuadletDir is the system quadlet directory used by the Bound helpers.
const QuadletDir = "/usr/share/containers/systemd"

// toolboxNames are the commands installed as hardlinks of /usr/bin/true.
var toolboxNames = []string{"cat", "false", "echo", "sleep"}

// BaseLayer returns the root directories plus the toolbox as /usr/bin/true with
// /usr/bin/{cat,false,echo,sleep} hardlinked to it. It is deterministic, so images that
// start with it share that layer.
func BaseLayer(t testing.TB) Layer {
	t.Helper()
	l := Layer{
		{Path: "/usr", Type: Dir}, {Path: "/usr/bin", Type: Dir},
		{Path: "/usr/bin/true", Type: File, Mode: 0o755, Data: Toolbox(t)},
	}
	for _, n := range toolboxNames {
		l = append(l, Entry{Path: "/usr/bin/" + n, Type: Hardlink, Link: "/usr/bin/true", Mode: 0o755})
	}
	return append(l, Entry{Path: "/etc", Type: Dir}, Entry{Path: "/var", Type: Dir},
		Entry{Path: "/tmp", Type: Dir, Mode: 0o1777})
}

// AppImage returns a one-layer app image: the BaseLayer files plus /etc/os-release and
// /usr/share/harness-app/<name> naming name (so different names give different layers),
// label org.opencontainers.image.title=name, Cmd ["/usr/bin/true"].
func AppImage(t testing.TB, name string) Image {
	t.Helper()
	l := append(BaseLayer(t),
		Entry{Path: "/etc/os-release", Type: File, Data: []byte(fmt.Sprintf("ID=harness-app\nNAME=%q\n", name))},
		Entry{Path: "/usr/share/harness-app/" + name, Type: File, Data: []byte("app " + name + "\n")},
	)
	return Image{
		Layers: []Layer{WithParents(l)},
		Labels: map[string]string{"org.opencontainers.image.title": name},
		Cmd:    []string{"/usr/bin/true"},
	}
}

// Bound is one logically bound image of an OSImage: the quadlet file at Quadlet (an
// absolute path in the image) with Content, and the symlink BoundImagesDir/EntryName
// pointing at it, absolute when AbsoluteLink, else relative (../../../share/...).
type Bound struct {
	EntryName    string // e.g. "app1.image"
	Quadlet      string // e.g. "/usr/share/containers/systemd/app1.image"
	Content      string // quadlet text, written verbatim (may be empty)
	AbsoluteLink bool
}

// BoundImage is a Bound "<name>.image" quadlet in QuadletDir whose Image= is ref.
func BoundImage(name, ref string) Bound {
	return Bound{EntryName: name + ".image", Quadlet: QuadletDir + "/" + name + ".image", Content: ImageQuadlet(ref)}
}

// BoundContainer is a Bound "<name>.container" quadlet in QuadletDir whose Image= is ref.
func BoundContainer(name, ref string) Bound {
	return Bound{EntryName: name + ".container", Quadlet: QuadletDir + "/" + name + ".container",
		Content: ContainerQuadlet(ref)}
}

// ImageQuadlet is the text of a .image quadlet pulling ref.
func ImageQuadlet(ref string) string {
	return fmt.Sprintf("[Image]\nImage=%s\n", ref)
}

// ContainerQuadlet is the text of a .container quadlet running /usr/bin/true from ref.
func ContainerQuadlet(ref string) string {
	return fmt.Sprintf("[Unit]\nDescription=harness container\n\n[Container]\nImage=%s\nExec=/usr/bin/true\n\n[Install]\nWantedBy=multi-user.target\n", ref)
}

// UnboundQuadlet is a layer (for OSImageOptions.ExtraLayers) holding a quadlet file at
// quadletPath with content and no bound-images.d symlink, i.e. an image that is NOT bound.
func UnboundQuadlet(quadletPath, content string) Layer {
	return WithParents(Layer{{Path: quadletPath, Type: File, Data: []byte(content)}})
}

// OSImageOptions configure OSImage.
type OSImageOptions struct {
	Bootable    bool    // add label containers.bootc=1
	Version     string  // os-release VERSION_ID and label org.opencontainers.image.version
	BoundImages []Bound // logically bound images
	ExtraLayers []Layer // appended on top, in order
}

// OSImage returns a bootable-looking OS image. Layer 0 (version independent, shared by
// every OSImage): BaseLayer, /usr/lib/modules/KernelVersion/{vmlinuz,initramfs.img},
// /etc/{hostname,passwd,group}, /etc/os-release -> ../usr/lib/os-release, /var/lib.
// Layer 1: /usr/lib/os-release with Version, plus each Bound's quadlet and symlink.
// Then ExtraLayers. Cmd is ["/usr/bin/true"].
func OSImage(t testing.TB, opts OSImageOptions) Image {
	t.Helper()
	kdir := "/usr/lib/modules/" + KernelVersion
	base := append(BaseLayer(t),
		Entry{Path: kdir + "/vmlinuz", Type: File, Data: []byte("fake kernel " + KernelVersion + "\n")},
		Entry{Path: kdir + "/initramfs.img", Type: File, Mode: 0o600, Data: []byte("fake initramfs\n")},
		Entry{Path: "/etc/hostname", Type: File, Data: []byte("bootstore-test\n")},
		Entry{Path: "/etc/passwd", Type: File, Data: []byte("root:x:0:0:root:/root:/usr/bin/true\n")},
		Entry{Path: "/etc/group", Type: File, Data: []byte("root:x:0:\n")},
		Entry{Path: "/etc/os-release", Type: Symlink, Link: "../usr/lib/os-release"},
		Entry{Path: "/var/lib", Type: Dir},
	)
	ver := Layer{{Path: "/usr/lib/os-release", Type: File, Data: []byte(fmt.Sprintf(
		"NAME=\"bootstore test OS\"\nID=bootstore-test\nVERSION_ID=%q\nVERSION=%q\n", opts.Version, opts.Version))}}
	if len(opts.BoundImages) > 0 {
		ver = append(ver, Entry{Path: BoundImagesDir, Type: Dir})
	}
	for _, b := range opts.BoundImages {
		link := b.Quadlet
		if !b.AbsoluteLink {
			link = relPath(BoundImagesDir, b.Quadlet)
		}
		ver = append(ver,
			Entry{Path: b.Quadlet, Type: File, Data: []byte(b.Content)},
			Entry{Path: path.Join(BoundImagesDir, b.EntryName), Type: Symlink, Link: link})
	}
	labels := map[string]string{"org.opencontainers.image.version": opts.Version}
	if opts.Bootable {
		labels["containers.bootc"] = "1"
	}
	layers := []Layer{WithParents(base), WithParents(ver)}
	layers = append(layers, opts.ExtraLayers...)
	return Image{Layers: layers, Labels: labels, Cmd: []string{"/usr/bin/true"}}
}

// relPath is the relative symlink target that reaches absolute target from directory dir.
func relPath(dir, target string) string {
	rel, err := filepath.Rel(path.Clean("/"+dir), path.Clean("/"+target))
	if err != nil {
		return target
	}
	return rel
}
