package erofs

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const t0 = 1700000000

func dir(mode uint32, ents ...Dirent) *Inode {
	return &Inode{Mode: unix.S_IFDIR | mode, Mtime: t0, Entries: ents}
}

func file(data string) *Inode {
	return &Inode{Mode: unix.S_IFREG | 0o644, Mtime: t0, Data: []byte(data)}
}

func ent(name string, in *Inode) Dirent { return Dirent{Name: name, Inode: in} }

// testTree is a tree with every kind of inode and layout Write has.
func testTree() *Inode {
	rnd := rand.New(rand.NewSource(1))
	random := func(n int) []byte {
		b := make([]byte, n)
		rnd.Read(b)
		return b
	}
	shared := Xattr{"user.shared", []byte("same on many")}
	hl := file("three names")
	hlSym := &Inode{Mode: unix.S_IFLNK | 0o777, Mtime: t0, Target: "hl-target"}
	var big []Dirent
	for i := range 600 {
		f := file(fmt.Sprint(i))
		f.Xattrs = []Xattr{shared}
		big = append(big, ent(fmt.Sprintf("entry-%04d-%s", i, strings.Repeat("x", i%40)), f))
	}
	big = append(big, ent("hl-in-big", hl))
	redirect := &Inode{Mode: unix.S_IFREG | 0o755, Mtime: t0 + 5, MtimeNsec: 123456789, Size: 1 << 20, Xattrs: []Xattr{
		{"trusted.overlay.redirect", []byte("/layer/diff/usr/bin/x")},
		{"trusted.overlay.metacopy", nil},
	}}
	huge := &Inode{Mode: unix.S_IFREG | 0o600, Mtime: -5, Size: 5 << 30, UID: 100000, GID: 70000}
	bigX := file("big xattrs")
	bigX.Xattrs = []Xattr{{"user.a", random(3000)}, {"user.b", random(3000)}, {"security.capability", []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}}
	return dir(0o755,
		ent("-dash", file("sorts before the dot")),
		ent("!bang", file("so does this")),
		ent(strings.Repeat("n", 255), file("long name")),
		ent("big", dir(0o3775, big...)),
		ent("data", dir(0o700,
			ent("empty", file("")),
			ent("small", file("hello\n")),
			ent("tail", &Inode{Mode: unix.S_IFREG | 0o644, Mtime: t0, Data: random(10000)}),
			ent("blocks", &Inode{Mode: unix.S_IFREG | 0o4755, Mtime: t0, Data: random(8192)}),
			ent("nearly", &Inode{Mode: unix.S_IFREG | 0o644, Mtime: t0, Data: random(4090)}),
			ent("redirect", redirect),
			ent("huge", huge),
			ent("bigx", bigX),
			ent("hl", hl),
		)),
		ent("dev", dir(0o755,
			ent("null", &Inode{Mode: unix.S_IFCHR | 0o666, Mtime: t0, Rdev: unix.Mkdev(1, 3)}),
			ent("loop", &Inode{Mode: unix.S_IFBLK | 0o660, Mtime: t0, Rdev: unix.Mkdev(259, 70000), GID: 6}),
			ent("fifo", &Inode{Mode: unix.S_IFIFO | 0o600, Mtime: t0 + 1}),
			ent("sock", &Inode{Mode: unix.S_IFSOCK | 0o755, Mtime: t0 + 2}),
		)),
		ent("links", dir(0o755,
			ent("short", &Inode{Mode: unix.S_IFLNK | 0o777, Mtime: t0, Target: "../data/small"}),
			ent("long", &Inode{Mode: unix.S_IFLNK | 0o777, Mtime: t0, Target: strings.Repeat("d/", 2047) + "x"}),
			ent("hs1", hlSym), ent("hs2", hlSym),
			ent("hl", hl),
		)),
		ent("emptydir", dir(0o555)),
	)
}

// writeImage writes root to a file in a temporary directory.
func writeImage(t *testing.T, root *Inode) string {
	t.Helper()
	var buf bytes.Buffer
	st, err := Write(&buf, root)
	if err != nil {
		t.Fatal(err)
	}
	if st.Bytes != int64(buf.Len()) || buf.Len()%blkSize != 0 {
		t.Fatalf("stats %+v for %d bytes", st, buf.Len())
	}
	img := filepath.Join(t.TempDir(), "image.erofs")
	if err := os.WriteFile(img, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return img
}

// mountImage loop-mounts img with the kernel's erofs until the test ends.
func mountImage(t *testing.T, img string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting an EROFS image needs root")
	}
	if data, err := os.ReadFile("/proc/filesystems"); err == nil && !bytes.Contains(data, []byte("\terofs\n")) {
		if err := exec.Command("modprobe", "erofs").Run(); err != nil {
			t.Skip("the kernel has no erofs")
		}
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "erofs", "-o", "ro,loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	return mnt
}

func TestKernelMountShowsTheTree(t *testing.T) {
	root := testTree()
	img := writeImage(t, root)
	if fsck, err := exec.LookPath("fsck.erofs"); err == nil {
		if out, err := exec.Command(fsck, img).CombinedOutput(); err != nil {
			t.Errorf("fsck.erofs: %v: %s", err, out)
		}
	}
	mnt := mountImage(t, img)
	inos := map[*Inode]uint64{}
	n := compareTree(t, mnt, "/", root, nil, inos)
	if n < 600 {
		t.Fatalf("compared only %d paths", n)
	}
}

// compareTree checks that the mounted path p shows in and returns the
// number of paths checked.
func compareTree(t *testing.T, mnt, p string, in *Inode, parent *Inode, inos map[*Inode]uint64) int {
	t.Helper()
	full := filepath.Join(mnt, p)
	var st unix.Stat_t
	if err := unix.Lstat(full, &st); err != nil {
		t.Errorf("%s: %v", p, err)
		return 1
	}
	fail := func(format string, args ...any) { t.Errorf("%s: "+format, append([]any{p}, args...)...) }
	if st.Mode != in.Mode || st.Uid != in.UID || st.Gid != in.GID {
		fail("mode %#o uid %d gid %d, want %#o %d %d", st.Mode, st.Uid, st.Gid, in.Mode, in.UID, in.GID)
	}
	if st.Mtim.Sec != in.Mtime || uint32(st.Mtim.Nsec) != in.MtimeNsec {
		fail("mtime %d.%09d, want %d.%09d", st.Mtim.Sec, st.Mtim.Nsec, in.Mtime, in.MtimeNsec)
	}
	if ino, ok := inos[in]; ok && ino != st.Ino {
		fail("inode %d, another name of it has %d", st.Ino, ino)
	} else if !ok {
		for other, ino := range inos {
			if ino == st.Ino && other != in {
				fail("shares inode %d with another file", ino)
			}
		}
		inos[in] = st.Ino
	}
	checkXattrs(t, full, p, in.Xattrs)
	switch in.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if in.Data == nil {
			if uint64(st.Size) != in.Size {
				fail("size %d, want %d", st.Size, in.Size)
			}
			checkZeros(t, full, p, st.Size)
			break
		}
		got, err := os.ReadFile(full)
		if err != nil {
			fail("%v", err)
		} else if !bytes.Equal(got, in.Data) {
			fail("content %x differs from %x", sha256.Sum256(got), sha256.Sum256(in.Data))
		}
	case unix.S_IFLNK:
		if got, err := os.Readlink(full); err != nil || got != in.Target {
			fail("target %q (%v), want %q", got, err, in.Target)
		}
	case unix.S_IFCHR, unix.S_IFBLK:
		if st.Rdev != in.Rdev {
			fail("rdev %d:%d, want %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev), unix.Major(in.Rdev), unix.Minor(in.Rdev))
		}
	case unix.S_IFDIR:
		return 1 + compareDir(t, mnt, p, full, in, inos, st.Nlink)
	}
	return 1
}

// checkZeros reads the first and the last MiB of a file without data: both
// must be zeros (reading all of a 5 GiB file would take minutes).
func checkZeros(t *testing.T, full, p string, size int64) {
	t.Helper()
	f, err := os.Open(full)
	if err != nil {
		t.Errorf("%s: %v", p, err)
		return
	}
	defer f.Close()
	buf := make([]byte, min(size, 1<<20))
	for _, off := range []int64{0, size - int64(len(buf))} {
		if n, err := f.ReadAt(buf, off); err != nil || n != len(buf) || !bytes.Equal(buf, make([]byte, len(buf))) {
			t.Errorf("%s: at %d: read %d bytes (%v), want %d zeros", p, off, n, err, len(buf))
		}
	}
}

func compareDir(t *testing.T, mnt, p, full string, in *Inode, inos map[*Inode]uint64, nlink uint64) int {
	entries, err := os.ReadDir(full)
	if err != nil {
		t.Errorf("%s: %v", p, err)
		return 0
	}
	var got, want []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	subdirs := uint64(0)
	for _, e := range in.Entries {
		want = append(want, e.Name)
		if e.Inode.Mode&unix.S_IFMT == unix.S_IFDIR {
			subdirs++
		}
	}
	sort.Strings(want)
	if strings.Join(got, "/") != strings.Join(want, "/") {
		t.Errorf("%s: lists %q, want %q", p, got, want)
	}
	if nlink != 2+subdirs {
		t.Errorf("%s: nlink %d, want %d", p, nlink, 2+subdirs)
	}
	n := 0
	for _, e := range in.Entries {
		// Looking each name up exercises the kernel's binary search.
		n += compareTree(t, mnt, filepath.Join(p, e.Name), e.Inode, in, inos)
	}
	return n
}

func checkXattrs(t *testing.T, full, p string, want []Xattr) {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(full, buf)
	if err != nil {
		t.Errorf("%s: listxattr: %v", p, err)
		return
	}
	var names []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name != "" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var wantNames []string
	for _, x := range want {
		wantNames = append(wantNames, x.Name)
		vn, err := unix.Lgetxattr(full, x.Name, buf)
		if err != nil || !bytes.Equal(buf[:vn], x.Value) {
			t.Errorf("%s: xattr %s = %q (%v), want %q", p, x.Name, buf[:max(vn, 0)], err, x.Value)
		}
	}
	sort.Strings(wantNames)
	if strings.Join(names, " ") != strings.Join(wantNames, " ") {
		t.Errorf("%s: xattrs %q, want %q", p, names, wantNames)
	}
}

func TestSameTreeSameBytes(t *testing.T) {
	var a, b bytes.Buffer
	if _, err := Write(&a, testTree()); err != nil {
		t.Fatal(err)
	}
	// The same tree with every directory's entries and every xattr list
	// in another order.
	shuffled := testTree()
	rnd := rand.New(rand.NewSource(2))
	var shuffle func(in *Inode)
	shuffle = func(in *Inode) {
		rnd.Shuffle(len(in.Entries), func(i, j int) { in.Entries[i], in.Entries[j] = in.Entries[j], in.Entries[i] })
		rnd.Shuffle(len(in.Xattrs), func(i, j int) { in.Xattrs[i], in.Xattrs[j] = in.Xattrs[j], in.Xattrs[i] })
		for _, e := range in.Entries {
			shuffle(e.Inode)
		}
	}
	shuffle(shuffled)
	if _, err := Write(&b, shuffled); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatalf("two writes of one tree differ: %x vs %x", sha256.Sum256(a.Bytes()), sha256.Sum256(b.Bytes()))
	}
	// A one-byte change of metadata changes the image.
	changed := testTree()
	changed.Entries[0].Inode.UID = 1
	var c bytes.Buffer
	if _, err := Write(&c, changed); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Bytes(), c.Bytes()) {
		t.Fatal("a changed owner did not change the image")
	}
}

func TestBadTreesAreRefused(t *testing.T) {
	sub := dir(0o755)
	for name, root := range map[string]*Inode{
		"root not a dir":    file("x"),
		"slash in name":     dir(0o755, ent("a/b", file(""))),
		"dot name":          dir(0o755, ent("..", file(""))),
		"duplicate name":    dir(0o755, ent("a", file("")), ent("a", file(""))),
		"name too long":     dir(0o755, ent(strings.Repeat("n", 256), file(""))),
		"hardlinked dir":    dir(0o755, ent("a", sub), ent("b", sub)),
		"unknown xattr":     dir(0o755, ent("a", &Inode{Mode: unix.S_IFREG, Xattrs: []Xattr{{"system.foo", nil}}})),
		"empty symlink":     dir(0o755, ent("a", &Inode{Mode: unix.S_IFLNK | 0o777})),
		"no type":           dir(0o755, ent("a", &Inode{Mode: 0o644})),
		"xattr given twice": dir(0o755, ent("a", &Inode{Mode: unix.S_IFREG, Xattrs: []Xattr{{"user.a", nil}, {"user.a", nil}}})),
	} {
		var buf bytes.Buffer
		_, err := Write(&buf, root)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
		if buf.Len() != 0 {
			t.Errorf("%s: %d bytes written", name, buf.Len())
		}
	}
}
