package deploy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// capNetRaw is a VFS_CAP_REVISION_2 security.capability value with
// cap_net_raw permitted and effective.
var capNetRaw = string([]byte{0x01, 0, 0, 0x02, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})

// deepComps is a directory chain longer than PATH_MAX (40 * 121 bytes).
func deepComps() []string {
	var cs []string
	for i := range 40 {
		cs = append(cs, strings.Repeat(string(rune('a'+i%26)), 120))
	}
	return cs
}

// deepDir creates comps below root one directory at a time and returns an
// open descriptor of the last one.
func deepDir(t *testing.T, root string, comps []string) int {
	t.Helper()
	fd, err := unix.Open(root, openDir, 0)
	must(t, err)
	for _, c := range comps {
		if err := unix.Mkdirat(fd, c, 0o755); err != nil && err != unix.EEXIST {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, c, openDir, 0)
		must(t, err)
		unix.Close(fd)
		fd = next
	}
	return fd
}

func deepFile(t *testing.T, root string, name, content string) {
	t.Helper()
	dfd := deepDir(t, root, deepComps())
	defer unix.Close(dfd)
	fd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
	must(t, err)
	_, err = unix.Write(fd, []byte(content))
	unix.Close(fd)
	must(t, err)
}

func deepWhiteout(t *testing.T, root string, name string) {
	t.Helper()
	dfd := deepDir(t, root, deepComps())
	defer unix.Close(dfd)
	must(t, unix.Mknodat(dfd, name, unix.S_IFCHR, 0))
}

// oracleLayers writes three layers, base first, that exercise every rule;
// sentinel is a directory that symlinks in the layers point to.
func oracleLayers(t *testing.T, dir, sentinel string) []string {
	l1, l2, l3 := newLayer(t, dir, "L1"), newLayer(t, dir, "L2"), newLayer(t, dir, "L3")

	// /etc: replaced, added, hardlinked, restricted.
	l1.file("etc/passwd", "root:x:0:0::/root:/bin/sh\n").file("etc/shadow", "root:*::\n").
		own("etc/shadow", 0, 42, 0o640).file("etc/hl1", "linked in etc\n").link(l1.p("etc/hl1"), "etc/hl2")
	l2.file("etc/passwd", "root:x:0:0::/root:/bin/bash\n").file("etc/new", "new\n")

	// Setuid, setgid, sticky, capabilities, user and trusted xattrs, owners.
	l1.file("usr/bin/su", "su").own("usr/bin/su", 0, 0, 0o4755).
		file("usr/bin/wall", "wall").own("usr/bin/wall", 0, 5, 0o2755).
		file("usr/bin/ping", "ping").own("usr/bin/ping", 0, 0, 0o755).xattr("usr/bin/ping", "security.capability", capNetRaw).
		file("usr/bin/mine", "mine").own("usr/bin/mine", 1000, 1000, 0o4700).
		dir("tmp", 0o1777).dir("usr/share/doc", 0o755).xattr("usr/share/doc", "user.dir", "1").
		file("usr/share/file", "x").xattr("usr/share/file", "user.test", "value\x00bin")
	l3.file("usr/bin/new", "new in L3")

	// Symlinks: chains, escapes, a symlink with a trusted xattr.
	l1.symlink("usr/lib/a", "b").symlink("usr/lib/b", "c").symlink("usr/lib/c", "real").file("usr/lib/real", "real").
		xattr("usr/lib/b", "trusted.sym", "on a symlink").
		symlink("up", "../../../..").symlink("pw", "/etc/passwd").symlink("esc", sentinel)
	// A directory over a lower symlink, a symlink over a lower directory.
	l1.symlink("usr/x", sentinel)
	l2.file("usr/x/file", "must stay inside")
	l1.symlink("rel", "../sentinel")
	l3.file("rel/planted", "inside")
	l1.file("sdir/old", "hidden by the symlink above")
	l2.symlink("sdir", sentinel)
	l3.file("sdir/planted", "only this")

	// Opaque directories, also with a plain directory above.
	l1.file("op/a", "a").file("op/b", "b").file("op/sub/s", "s")
	l2.dir("op", 0o755).opaque("op").xattr("op", "user.op", "L2").file("op/c", "c")
	l3.file("op/d", "d")
	l1.file("op2/hidden", "h")
	l3.dir("op2", 0o750).opaque("op2").xattr("op2", "user.op2", "top").file("op2/shown", "s")
	// The kernel ignores opacity of a layer's root.
	l2.opaque(".")
	l3.xattr(".", "user.root", "top root")

	// Whiteouts of files, of whole directories, of what does not exist.
	l1.file("f1", "gone").file("keep", "kept")
	l3.whiteout("f1")
	l1.file("wd/x", "x").file("wd/sub/y", "y").file("wd2/x", "x")
	l2.whiteout("wd").whiteout("wd2").whiteout("ghost").file("only2/f", "f").whiteout("only2/w")
	l3.file("wd2/fresh", "fresh")

	// File -> dir -> file, and dir -> file -> dir, across three layers.
	l1.file("fd", "file in L1")
	l2.file("fd/inner", "dir in L2")
	l3.file("fd", "file again in L3")
	l1.file("df/old", "old")
	l2.file("df", "file in L2")
	l3.file("df/new", "new")

	// A merged directory takes the topmost layer's metadata.
	l1.dir("meta", 0o755).own("meta", 0, 0, 0o755).file("meta/one", "1")
	l2.dir("meta", 0o711).own("meta", 1002, 1002, 0o711).file("meta/two", "2")
	l3.dir("meta", 0o750).own("meta", 1003, 1003, 0o750).xattr("meta", "user.top", "L3")

	// Hardlinks: one name whited out, one replaced, across directories,
	// across layers, a hardlinked setuid file and a hardlinked symlink.
	l1.file("h/a", "h").link(l1.p("h/a"), "h/b").link(l1.p("h/a"), "h/c")
	l2.whiteout("h/b")
	l3.file("h/c", "replaced")
	l1.file("h2/x", "x2").link(l1.p("h2/x"), "h3/z")
	l1.file("xl/a", "cross-layer")
	l3.link(l1.p("xl/a"), "xl/b")
	l1.file("sbin/suid", "s").own("sbin/suid", 0, 0, 0o4755).link(l1.p("sbin/suid"), "sbin/suid2")
	l1.symlink("hs1", "target").link(l1.p("hs1"), "hs2")

	// Special files, empty and sparse files.
	l1.mknod("dev/null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))).
		mknod("dev/loop0", unix.S_IFBLK|0o660, int(unix.Mkdev(7, 0))).
		mknod("run/fifo", unix.S_IFIFO|0o600, 0).mknod("run/sock", unix.S_IFSOCK|0o755, 0).
		file("empty", "")
	f, err := os.Create(l1.p("sparse"))
	must(t, err)
	must(t, f.Truncate(3<<20))
	_, err = f.WriteAt([]byte("x"), 1<<20)
	must(t, err)
	must(t, f.Close())

	// Non-UTF-8 names and a path longer than PATH_MAX, merged at depth.
	l1.file("bad\xff\xfe", "latin1").file("\x80dir/f\xc3(", "old").file("\x80dir/keep", "k")
	l3.whiteout("\x80dir/f\xc3(").file("\x80dir/g\xff", "new")
	deepFile(t, l1.root, "base", "deep base")
	deepFile(t, l1.root, "gone", "deep gone")
	deepWhiteout(t, l2.root, "gone")
	deepFile(t, l3.root, "top", "deep top")

	stampTimes(t, l1, l2, l3)
	return []string{l1.root, l2.root, l3.root}
}

// stampTimes gives every entry of the layers a distinct time, so that
// metadata taken from the wrong layer shows.
func stampTimes(t *testing.T, layers ...layer) {
	t.Helper()
	for i, l := range layers {
		fd, err := unix.Open(l.root, openDir, 0)
		must(t, err)
		n := int64(0)
		walkFd(t, fd, "", func(dirfd int, name, _ string, _ *unix.Stat_t) {
			n++
			ts := unix.NsecToTimespec((1_600_000_000+int64(i)*100_000+n)*1e9 + n)
			must(t, unix.UtimesNanoAt(dirfd, name, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
		})
		ts := unix.NsecToTimespec(int64(1_500_000_000+i) * 1e9)
		must(t, unix.UtimesNanoAt(fd, "", []unix.Timespec{ts, ts}, unix.AT_EMPTY_PATH))
		unix.Close(fd)
	}
}

// mountOverlay mounts layers (base first) read-only as overlay lowerdirs.
func mountOverlay(t *testing.T, layers []string, mnt string) {
	t.Helper()
	must(t, os.Mkdir(mnt, 0o755))
	var lower []string
	for i := len(layers) - 1; i >= 0; i-- {
		lower = append(lower, layers[i])
	}
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(lower, ":")); err != nil {
		t.Skipf("cannot mount overlayfs here: %v", err)
	}
	t.Cleanup(func() {
		// A failed walk may leave descriptors open below mnt: detach then.
		if err := unix.Unmount(mnt, 0); err != nil {
			if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", mnt, err)
			}
		}
	})
}

// TestOracle builds a deployment and compares it, path by path, with what
// the kernel's overlayfs shows for the same layers.
func TestOracle(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name   string
		cloner *linkCloner
	}{{"copy", nil}, {"hardlink", &linkCloner{}}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			sentinel := filepath.Join(out, "sentinel")
			must(t, os.MkdirAll(sentinel, 0o755))
			layers := oracleLayers(t, dir, sentinel)
			mnt := filepath.Join(dir, "mnt")
			mountOverlay(t, layers, mnt)

			var before []map[string]entry
			for _, l := range layers {
				before = append(before, snapshot(t, l, true))
			}
			var passwd unix.Stat_t
			must(t, unix.Lstat("/etc/passwd", &passwd))

			opts := Options{Workers: 3}
			if tc.cloner != nil {
				opts.Cloner = tc.cloner
			}
			dst := filepath.Join(out, "deploy")
			start := time.Now()
			res, err := Build(context.Background(), layers, dst, opts)
			took := time.Since(start)
			must(t, err)

			want := snapshot(t, mnt, false)
			got := snapshot(t, dst, true)
			t.Logf("%d paths, build %v, %+v", len(got), took, *res)
			for p, e := range got {
				if strings.Contains(e.Xattrs, "trusted.overlay.") {
					t.Errorf("%q kept overlay xattrs: %s", p, e.Xattrs)
				}
			}
			diffTrees(t, "overlay", want, "deploy", got)

			// Nothing outside dst changed.
			if s := siblings(t, dst, "deploy", "sentinel"); len(s) != 0 {
				t.Errorf("left next to dst: %q", s)
			}
			if es, _ := os.ReadDir(sentinel); len(es) != 0 {
				t.Errorf("written through a symlink into %s: %v", sentinel, es)
			}
			var passwd2 unix.Stat_t
			must(t, unix.Lstat("/etc/passwd", &passwd2))
			if passwd2.Mtim != passwd.Mtim || passwd2.Ctim != passwd.Ctim || passwd2.Size != passwd.Size {
				t.Errorf("/etc/passwd changed")
			}
			for i, l := range layers {
				diffTrees(t, "layer before", before[i], "layer after", snapshot(t, l, true))
			}
			checkCounts(t, got, res)
			if tc.cloner != nil {
				checkSharing(t, layers, got, res, tc.cloner)
			}
		})
	}
}

// checkCounts compares the Result with what dst holds.
func checkCounts(t *testing.T, got map[string]entry, res *Result) {
	t.Helper()
	var c Result
	inodes := map[[2]uint64]bool{}
	for _, e := range got {
		k := [2]uint64{e.dev, e.ino}
		if e.Type != unix.S_IFDIR && inodes[k] {
			c.Hardlinks++
			continue
		}
		inodes[k] = true
		switch e.Type {
		case unix.S_IFDIR:
			c.Dirs++
		case unix.S_IFREG:
			c.Files++
			c.Bytes += e.Size
		case unix.S_IFLNK:
			c.Symlinks++
		default:
			c.Others++
		}
	}
	c.Shared = res.Shared
	if c != *res {
		t.Errorf("Result %+v, dst holds %+v", *res, c)
	}
}

// checkSharing checks that files outside /etc are the layers' inodes and
// files in /etc are not.
func checkSharing(t *testing.T, layers []string, got map[string]entry, res *Result, c *linkCloner) {
	t.Helper()
	layerInodes := map[[2]uint64]bool{}
	for _, l := range layers {
		for _, e := range snapshot(t, l, true) {
			layerInodes[[2]uint64{e.dev, e.ino}] = true
		}
	}
	var shared int64
	for p, e := range got {
		if e.Type != unix.S_IFREG {
			continue
		}
		inLayer := layerInodes[[2]uint64{e.dev, e.ino}]
		if mutable := p == "/etc" || strings.HasPrefix(p, "/etc/"); mutable == inLayer {
			t.Errorf("%q: mutable=%v but shares a layer inode=%v", p, mutable, inLayer)
		}
		if inLayer && (e.Group == "" || e.Group == p) {
			shared++
		}
	}
	if res.Shared != shared || c.links.Load() != shared {
		t.Errorf("Shared %d, cloner linked %d, dst has %d layer inodes", res.Shared, c.links.Load(), shared)
	}
}
