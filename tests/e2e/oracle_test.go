package e2e

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/tests/harness"
)

// oracleCap is a VFS_CAP_REVISION_2 security.capability value: cap_net_raw
// permitted and effective.
var oracleCap = string([]byte{0x01, 0, 0, 0x02, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})

// oracleHostPlant is the name a layer plants below a symlink to the host's
// /etc; it must never appear in the host's /etc.
const oracleHostPlant = "bootstore-oracle-planted"

// oracleSparse streams size bytes of zeros with one "x" at offset at.
func oracleSparse(size, at int64) func() io.Reader {
	return func() io.Reader {
		return io.MultiReader(io.LimitReader(zeroReader{}, at), strings.NewReader("x"), io.LimitReader(zeroReader{}, size-at-1))
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// oracleLongDir is a directory path of 13 components of 250 bytes (3.3 kB).
// It stays within PATH_MAX with the store's prefix: containers/storage
// v1.64.2 unpacks layers by path and fails a longer one with ENAMETOOLONG
// at pull time, before bootstore sees it (pkg/deploy's own oracle test
// covers trees deeper than PATH_MAX).
func oracleLongDir() string {
	var cs []string
	for i := range 13 {
		cs = append(cs, strings.Repeat(string(rune('a'+i)), 250))
	}
	return "/usr/share/long/" + strings.Join(cs, "/")
}

// oracleImage is a bootable image of six layers (OSImage's two, then four)
// made to be hard for a deployment: every case of the list. sentinel
// is a host directory outside ROOT that symlinks in the image point at.
func oracleImage(t *testing.T, sentinel string) harness.Image {
	t.Helper()
	long := oracleLongDir()
	file := func(p, data string) harness.Entry {
		return harness.Entry{Path: p, Type: harness.File, Data: []byte(data)}
	}
	own := func(e harness.Entry, uid, gid int, mode int64) harness.Entry {
		e.UID, e.GID, e.Mode = uid, gid, mode
		return e
	}
	xattr := func(e harness.Entry, kv ...string) harness.Entry {
		e.Xattrs = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			e.Xattrs[kv[i]] = kv[i+1]
		}
		return e
	}
	dir := func(p string, mode int64) harness.Entry { return harness.Entry{Path: p, Type: harness.Dir, Mode: mode} }
	sym := func(p, target string) harness.Entry {
		return harness.Entry{Path: p, Type: harness.Symlink, Link: target}
	}
	link := func(p, target string, mode int64) harness.Entry {
		return harness.Entry{Path: p, Type: harness.Hardlink, Link: target, Mode: mode}
	}
	wh := func(p string) harness.Entry { return harness.Entry{Path: p, Type: harness.Whiteout} }
	opq := func(p string) harness.Entry { return harness.Entry{Path: p, Type: harness.Opaque} }

	l2 := harness.Layer{
		// /etc is copied, not shared: hardlinks, setuid with a capability,
		// restricted files, special files and holes must survive the copy.
		xattr(dir("/etc", 0o755), "user.etc", "L2"),
		own(file("/etc/shadow", "root:*::\n"), 0, 42, 0o640),
		file("/etc/hl1", "linked in etc\n"), link("/etc/hl2", "/etc/hl1", 0o644),
		xattr(own(file("/etc/cap-tool", "cap"), 0, 0, 0o4755), "security.capability", oracleCap),
		{Path: "/etc/sparse", Type: harness.File, Content: oracleSparse(1<<20, 1<<19), Size: 1 << 20},
		{Path: "/etc/fifo", Type: harness.Fifo, Mode: 0o640},
		{Path: "/etc/null", Type: harness.CharDev, DevMajor: 1, DevMinor: 3, Mode: 0o666},
		// One inode named inside and outside /etc.
		file("/usr/share/both", "in /usr and in /etc\n"), link("/etc/both", "/usr/share/both", 0o644),

		// Setuid, setgid, capabilities, owners without names, odd modes.
		own(file("/usr/bin/su", "su"), 0, 0, 0o4755),
		own(file("/usr/bin/wall", "wall"), 0, 5, 0o2755),
		xattr(own(file("/usr/bin/ping", "ping"), 0, 0, 0o755), "security.capability", oracleCap),
		own(file("/usr/bin/mine", "mine"), 1000, 1000, 0o4700),
		own(file("/usr/bin/odd", "odd"), 12345, 54321, 0o001),
		own(dir("/usr/share/odd-dir", 0o311), 777, 888, 0o3311),
		dir("/usr/lib/bootc", 0o755),
		xattr(dir("/usr/share/doc", 0o755), "user.dir", "1"),
		xattr(file("/usr/share/file", "x"), "user.test", "value\x00bin", "trusted.t", "t"),

		// Symlink chains (one continued across layers) and a symlink
		// carrying an xattr.
		sym("/usr/lib/chain/a", "b"), xattr(sym("/usr/lib/chain/b", "c"), "trusted.sym", "on a symlink"),
		sym("/usr/lib/chain/c", "real"), file("/usr/lib/chain/real", "real"),
		sym("/usr/bin/tool", "../lib/chain/a"),
		// Symlinks out of the tree, traversed by paths in upper layers.
		sym("/usr/share/up", "../../../.."),
		sym("/usr/share/pw", "/etc/passwd"),
		sym("/usr/share/etcdir", "/etc"),
		sym("/usr/share/sent", sentinel),
		// A directory later replaced by a symlink.
		file("/usr/share/ds/x", "under a dir that becomes a symlink"),

		// Opaque directories and whiteouts: the lower contents.
		file("/usr/share/op/a", "a"), file("/usr/share/op/b", "b"), file("/usr/share/op/sub/s", "s"),
		file("/usr/share/op2/hidden", "h"), file("/usr/share/op3/a", "a"),
		file("/usr/share/f1", "gone"), file("/usr/share/keep", "kept"),
		file("/usr/share/wd/x", "x"), file("/usr/share/wd/sub/y", "y"), file("/usr/share/wd2/x", "x"),

		// File -> dir -> file and dir -> file -> dir.
		file("/usr/share/fd", "file in L2"),
		file("/usr/share/df/old", "old"),

		// A merged directory takes the topmost layer's metadata.
		dir("/usr/share/meta", 0o755), file("/usr/share/meta/one", "1"),

		// Hardlinks: one name whited out, one replaced, across
		// directories, a hardlinked setuid file, a hardlinked symlink.
		file("/usr/share/h/a", "h"), link("/usr/share/h/b", "/usr/share/h/a", 0o644), link("/usr/share/h/c", "/usr/share/h/a", 0o644),
		file("/usr/share/h2/x", "x2"), link("/usr/share/h3/z", "/usr/share/h2/x", 0o644),
		own(file("/usr/sbin/suid", "s"), 0, 0, 0o4755), link("/usr/sbin/suid2", "/usr/sbin/suid", 0o4755),
		sym("/usr/share/hs1", "target"), link("/usr/share/hs2", "/usr/share/hs1", 0o777),

		// Special files, empty and sparse files.
		{Path: "/usr/share/dev/null", Type: harness.CharDev, DevMajor: 1, DevMinor: 3, Mode: 0o666},
		{Path: "/usr/share/dev/tty", Type: harness.CharDev, DevMajor: 5, DevMinor: 0, Mode: 0o620, GID: 5},
		{Path: "/usr/share/dev/loop0", Type: harness.BlockDev, DevMajor: 7, DevMinor: 0, Mode: 0o660},
		{Path: "/usr/share/run/fifo", Type: harness.Fifo, Mode: 0o600},
		file("/usr/share/empty", ""),
		{Path: "/usr/share/sparse", Type: harness.File, Content: oracleSparse(4<<20, 1<<20), Size: 4 << 20},

		// Non-UTF-8 names and a long path. (A non-UTF-8 directory name is
		// TestHostileLayerIsRefused/non-utf8-dir: containers/storage
		// v1.64.2 cannot store such a layer.)
		file("/usr/share/bad\xff\xfe", "latin1"), file("/usr/share/nonutf8/f\xc3(", "old"), file("/usr/share/nonutf8/keep", "k"),
		file(long+"/base", "deep base"), file(long+"/gone", "deep gone"),

		// /var moves to the stateroot: it must arrive as the image has it.
		own(file("/var/lib/app/data", "data\n"), 1000, 1000, 0o600),
		link("/var/lib/app/hl", "/var/lib/app/data", 0o600),
		sym("/var/lib/app/link", "data"),
		xattr(own(file("/var/lib/app/cap", "cap"), 0, 0, 0o2755), "security.capability", oracleCap, "user.v", "1"),
		dir("/var/tmp", 0o1777),
		{Path: "/var/lib/app/fifo", Type: harness.Fifo, Mode: 0o600},
		own(dir("/var/log/private", 0o700), 0, 0, 0o700),
	}
	l3 := harness.Layer{
		xattr(dir("/etc", 0o755), "user.etc", "L3"),
		file("/etc/passwd", "root:x:0:0:root:/root:/usr/bin/true\noracle:x:1000:1000::/home:/usr/bin/false\n"),
		file("/etc/new", "new\n"),
		xattr(dir("/usr/share/op", 0o755), "user.op", "L3"), opq("/usr/share/op"), file("/usr/share/op/c", "c"),
		wh("/usr/share/wd"), wh("/usr/share/wd2"), wh("/usr/share/ghost"),
		file("/usr/share/only3/f", "f"), wh("/usr/share/only3/w"),
		file("/usr/share/fd/inner", "dir in L3"),
		file("/usr/share/df", "file in L3"),
		own(dir("/usr/share/meta", 0o711), 1002, 1002, 0o711), file("/usr/share/meta/two", "2"),
		wh("/usr/share/h/b"),
		wh(long + "/gone"),
		// Paths through the lower layer's symlinks: directories here.
		file("/usr/share/sent/planted", "must stay in the deployment"),
		file("/usr/share/up/planted-up", "must stay in the deployment"),
		file("/usr/share/etcdir/"+oracleHostPlant, "must stay in the deployment"),
		file("/usr/share/pw", "not the host's passwd\n"),
		sym("/usr/share/ds", "doc"),
		sym("/usr/lib/chain/c", "real2"), file("/usr/lib/chain/real2", "real2"),
		file("/var/lib/app/data2", "data2\n"),
	}
	l4 := harness.Layer{
		own(dir("/usr/share/op2", 0o750), 0, 0, 0o750), opq("/usr/share/op2"), file("/usr/share/op2/shown", "s"),
		dir("/usr/share/op3", 0o755), opq("/usr/share/op3"),
		file("/usr/share/op/d", "d"),
		file("/usr/share/wd2/fresh", "fresh"),
		file("/usr/share/fd", "file again in L4"),
		file("/usr/share/df/new", "new"),
		xattr(own(dir("/usr/share/meta", 0o750), 1003, 1003, 0o750), "user.top", "L4"),
		file("/usr/share/h/c", "replaced"),
		wh("/usr/share/nonutf8/f\xc3("), file("/usr/share/nonutf8/g\xff", "new"),
		wh("/usr/share/f1"),
		file(long+"/top", "deep top"),
		file("/usr/bin/new", "new in L4"),
		wh("/var/lib/app/link"),
	}
	l5 := harness.Layer{
		// Hide one name of the base layer's hardlinked toolbox.
		wh("/usr/bin/sleep"),
		xattr(file("/etc/motd", "welcome to the oracle\n"), "user.motd", "L5"),
		file("/usr/share/wd2/later", "later"),
	}
	img := harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "oracle",
		ExtraLayers: []harness.Layer{harness.WithParents(l2), harness.WithParents(l3), harness.WithParents(l4), harness.WithParents(l5)}})
	// Distinct times everywhere, so metadata taken from the wrong layer or
	// the wrong name shows.
	for i, l := range img.Layers {
		for j := range l {
			if l[j].ModTime.IsZero() {
				l[j].ModTime = time.Unix(1_600_000_000+int64(i)*100_000+int64(j)*7, int64(j)*1000+int64(i)+1)
			}
		}
	}
	return img
}

// oracleGroups maps every non-directory of tr that shares its inode with
// another path of tr to the smallest such path. class splits inodes: names
// in different classes are expected to be different inodes.
func oracleGroups(tr harness.Tree, class func(p string) string) map[string]string {
	type key struct {
		dev, ino uint64
		class    string
	}
	byInode := map[key][]string{}
	for p, n := range tr {
		if n.Type != unix.S_IFDIR {
			k := key{n.Dev, n.Ino, class(p)}
			byInode[k] = append(byInode[k], p)
		}
	}
	out := map[string]string{}
	for _, ps := range byInode {
		if len(ps) > 1 {
			sort.Strings(ps)
			for _, p := range ps {
				out[p] = ps[0]
			}
		}
	}
	return out
}

func oracleSame(p string) string { return "" }

// oracleMutable is the class of a path under the prefixes bootstore copies
// instead of sharing (/etc, /var): pkg/deploy gives an inode named both
// inside and outside them two inodes, on purpose.
func oracleMutable(p string) string {
	for _, pre := range []string{"/etc", "/var"} {
		if p == pre || strings.HasPrefix(p, pre+"/") {
			return pre
		}
	}
	return ""
}

// oracleCompare reports every path on which the trees differ: presence,
// type, permissions, owner, size, content, symlink target, device, xattrs,
// mtime (except of the directories in mtimeMayDiffer) and hardlink
// grouping. It returns the number of paths compared.
func oracleCompare(t *testing.T, what string, want, got harness.Tree, wantGroups, gotGroups map[string]string, mtimeMayDiffer map[string]bool) int {
	t.Helper()
	paths := want.Paths()
	for p := range got {
		if _, ok := want[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	bad := 0
	for _, p := range paths {
		w, wok := want[p]
		g, gok := got[p]
		var diffs []string
		switch {
		case !wok:
			diffs = append(diffs, "only in the deployment: "+g.String())
		case !gok:
			diffs = append(diffs, "only in the overlay: "+w.String())
		default:
			if w.Type == unix.S_IFDIR && g.Type == unix.S_IFDIR && mtimeMayDiffer[p] {
				g.Mtime = w.Mtime
			}
			w.Dev, w.Ino, g.Dev, g.Ino = 0, 0, 0, 0
			if w != g {
				diffs = append(diffs, "overlay:    "+w.String(), "deployment: "+g.String())
			}
			if wantGroups[p] != gotGroups[p] {
				diffs = append(diffs, "hardlinked with "+quoteOrNone(wantGroups[p])+" in the overlay, with "+quoteOrNone(gotGroups[p])+" in the deployment")
			}
		}
		if len(diffs) == 0 {
			continue
		}
		t.Errorf("%s: %q differs:\n  %s", what, p, strings.Join(diffs, "\n  "))
		if bad++; bad >= 40 {
			t.Fatalf("%s: too many differences", what)
		}
	}
	return len(paths)
}

func quoteOrNone(p string) string {
	if p == "" {
		return "nothing"
	}
	return "\"" + p + "\""
}

// oracleMount mounts layers (top first) read-only as overlay lowerdirs on
// a fresh directory and unmounts it at cleanup, also when the test fails.
func oracleMount(t *testing.T, layers []string) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "overlay")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(layers, ":")); err != nil {
		t.Fatalf("mounting the image's layers as overlay lowerdirs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", mnt, err)
			}
		}
	})
	return mnt
}

// oracleCheck mounts the store's layers of image ref as overlay lowerdirs
// and compares the deployment dep with that view, path by path. The
// differences bootstore makes on purpose are allowed exactly and checked
// on their own: /usr/etc is a copy of the image's /etc; the image's /var
// is the stateroot's /var and the deployment's /var an empty directory;
// /usr/lib/bootc/storage is a symlink to the unified store (its missing
// parents are plain directories); the directories holding those changes
// have new mtimes. It returns the overlay's and the deployment's trees.
func oracleCheck(t *testing.T, h *host, ref, dep string) (ov, got harness.Tree) {
	t.Helper()
	deployDir := filepath.Dir(dep)
	if entries, _ := os.ReadDir(deployDir); len(entries) != 2 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("%s should hold the deployment and its origin only: %q", deployDir, names)
	}
	return oracleCheckView(t, h, ref, dep)
}

// oracleCheckView is oracleCheck's comparison of dep, a directory showing
// the deployment's tree as it boots, with the overlay view of ref's layers.
func oracleCheckView(t *testing.T, h *host, ref, dep string) (ov, got harness.Tree) {
	t.Helper()
	mnt := oracleMount(t, h.layerDirs(ref))
	start := time.Now()
	ov = harness.Snapshot(t, mnt)
	got = harness.Snapshot(t, dep)
	stateVar := harness.Snapshot(t, filepath.Join(h.root, "ostree/deploy/default/var"))
	t.Logf("snapshots of %d overlay paths, %d deployment paths, %d /var paths took %v",
		len(ov), len(got), len(stateVar), time.Since(start).Round(time.Millisecond))

	// The differences bootstore makes on purpose, each checked here.
	if _, ok := ov["/usr/etc"]; ok {
		t.Errorf("%s has /usr/etc, which bootstore replaces: the comparison does not apply", ref)
		return ov, got
	}
	if w := ov["/var"]; w.Type != unix.S_IFDIR {
		t.Errorf("%s has no /var directory: the comparison does not apply", ref)
		return ov, got
	}
	const storage = "/usr/lib/bootc/storage"
	if n := got[storage]; n.Type != unix.S_IFLNK || n.Target != "/sysroot/ostree/bootc/storage" {
		t.Errorf("%s should be a symlink to /sysroot/ostree/bootc/storage: %v", storage, n)
	}
	if w, g := ov["/var"], got["/var"]; g.Type != unix.S_IFDIR || g.Perm != w.Perm || g.UID != 0 || g.GID != 0 || g.Xattrs != "" {
		t.Errorf("the deployment's /var should be an empty directory with the image's mode %04o: %v", w.Perm, g)
	}
	under := func(p, pre string) bool { return p == pre || strings.HasPrefix(p, pre+"/") }
	// Directories whose entries bootstore changed: / (the new /var), /usr
	// (usr/etc) and the one that holds the storage link or its new parents.
	changed := map[string]bool{"/": true, "/usr": true}
	extra := map[string]bool{storage: true}
	for d := filepath.Dir(storage); ; d = filepath.Dir(d) {
		if _, ok := ov[d]; ok {
			changed[d] = true
			break
		}
		if n := got[d]; n.Type != unix.S_IFDIR || n.Perm != 0o755 || n.UID != 0 || n.GID != 0 || n.Xattrs != "" {
			t.Errorf("bootstore should have made %s a plain directory: %v", d, n)
		}
		extra[d] = true
	}
	// Every deployment of an image that embeds no apps gets an empty
	// embedded store, so that podman's additional image store exists.
	const embeddedStore = "/usr/lib/containers/storage"
	if _, ok := ov[embeddedStore]; !ok {
		wantStore := map[string]uint32{
			embeddedStore: unix.S_IFDIR, embeddedStore + "/overlay": unix.S_IFDIR,
			embeddedStore + "/overlay-images": unix.S_IFDIR, embeddedStore + "/overlay-images/images.lock": unix.S_IFREG,
			embeddedStore + "/overlay-layers": unix.S_IFDIR, embeddedStore + "/overlay-layers/layers.lock": unix.S_IFREG,
		}
		for p, typ := range wantStore {
			if n := got[p]; n.Type != typ || n.Size != 0 || n.UID != 0 || n.GID != 0 {
				t.Errorf("the empty embedded store should have %s: %v", p, n)
			}
		}
		for p := range got {
			if under(p, embeddedStore) {
				if _, ok := wantStore[p]; !ok {
					t.Errorf("the empty embedded store has %s too", p)
				}
				extra[p] = true
			}
		}
		for d := filepath.Dir(embeddedStore); ; d = filepath.Dir(d) {
			if _, ok := ov[d]; ok {
				changed[d] = true
				break
			}
			if n := got[d]; n.Type != unix.S_IFDIR || n.Perm != 0o755 || n.UID != 0 || n.GID != 0 || n.Xattrs != "" {
				t.Errorf("bootstore should have made %s a plain directory: %v", d, n)
			}
			extra[d] = true
		}
	}
	want, have := harness.Tree{}, harness.Tree{}
	for p, n := range ov {
		if !under(p, "/var") {
			want[p] = n
		}
	}
	for p, n := range got {
		if p != "/var" && !extra[p] && !under(p, "/usr/etc") {
			have[p] = n
		}
	}
	n := oracleCompare(t, "deployment", want, have, oracleGroups(want, oracleMutable), oracleGroups(have, oracleSame), changed)

	// /usr/etc is a copy of the image's /etc; the stateroot's /var is the
	// image's /var.
	wantEtc, gotEtc := ov.Sub("/etc"), got.Sub("/usr/etc")
	n += oracleCompare(t, "/usr/etc against the overlay's /etc", wantEtc, gotEtc, oracleGroups(wantEtc, oracleSame), oracleGroups(gotEtc, oracleSame), nil)
	wantVar := ov.Sub("/var")
	n += oracleCompare(t, "the stateroot's /var against the overlay's /var", wantVar, stateVar, oracleGroups(wantVar, oracleSame), oracleGroups(stateVar, oracleSame), nil)
	t.Logf("compared %d paths", n)
	return ov, got
}

// oracleOutside records what the test can see outside ROOT: the directory
// holding ROOT (ROOT and the sentinel directory only), the sentinel's whole
// tree, the host's /etc/passwd and the names layers try to plant on the host.
type oracleOutside struct {
	base, sentinel string
	baseNode       harness.Node
	sentinelTree   harness.Tree
	passwd         unix.Stat_t
	hostPaths      []string
}

func oracleRecordOutside(t *testing.T, base, sentinel string, hostPaths ...string) *oracleOutside {
	t.Helper()
	o := &oracleOutside{base: base, sentinel: sentinel, hostPaths: hostPaths}
	o.baseNode = harness.Snapshot(t, base)["/"]
	o.sentinelTree = harness.Snapshot(t, sentinel)
	if err := unix.Lstat("/etc/passwd", &o.passwd); err != nil {
		t.Fatal(err)
	}
	for _, p := range hostPaths {
		if _, err := os.Lstat(p); err == nil {
			t.Fatalf("%s exists before the test; remove it", p)
		}
	}
	return o
}

// check fails for any change outside ROOT since the record.
func (o *oracleOutside) check(t *testing.T) {
	t.Helper()
	entries, err := os.ReadDir(o.base)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "root sentinel" {
		t.Errorf("written next to ROOT: %s holds %q", o.base, names)
	}
	if n := harness.Snapshot(t, o.base)["/"]; n.Mtime != o.baseNode.Mtime {
		t.Errorf("the directory holding ROOT changed: %v, was %v", n, o.baseNode)
	}
	after := harness.Snapshot(t, o.sentinel)
	for _, p := range after.Paths() {
		if b, ok := o.sentinelTree[p]; !ok || b != after[p] {
			t.Errorf("the host directory %s changed at %q: %v", o.sentinel, p, after[p])
		}
	}
	for _, p := range o.sentinelTree.Paths() {
		if _, ok := after[p]; !ok {
			t.Errorf("the host directory %s lost %q", o.sentinel, p)
		}
	}
	var passwd unix.Stat_t
	if err := unix.Lstat("/etc/passwd", &passwd); err != nil {
		t.Fatal(err)
	}
	if passwd.Ino != o.passwd.Ino || passwd.Mtim != o.passwd.Mtim || passwd.Ctim != o.passwd.Ctim || passwd.Size != o.passwd.Size {
		t.Errorf("the host's /etc/passwd changed")
	}
	for _, p := range o.hostPaths {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("a layer wrote %s on the host", p)
			os.RemoveAll(p)
		}
	}
}

// oracleKeep is the content of the sentinel directory's file; no
// deployment may hold it.
const oracleKeep = "host content, not the image's\n"

var oracleKeepSum = func() string {
	h := sha256.Sum256([]byte(oracleKeep))
	return hex.EncodeToString(h[:])
}()

// oracleHost is a host whose ROOT is BASE/root, next to a sentinel
// directory BASE/sentinel holding one file; base "" means a new temporary
// directory.
func oracleHost(t *testing.T, base string) (h *host, _, sentinel string) {
	t.Helper()
	harness.RequireRoot(t)
	if base == "" {
		base = t.TempDir()
	} else if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	sentinel = filepath.Join(base, "sentinel")
	if err := os.Mkdir(sentinel, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(sentinel, "keep"), oracleKeep)
	return newHostAt(t, filepath.Join(base, "root")), base, sentinel
}

// TestOracleDeploymentEqualsKernelOverlay installs a hard image and
// compares the deployment, path by path, with the kernel's overlayfs view
// of the same layer directories of the store: with the default copy mode on
// the test's filesystem (hardlinks on ext4), with --copy-mode copy, with
// reflinks on XFS, and with the image pushed as zstd:chunked, so that every
// layer is pulled partially.
//
// A partial pull does not keep every mtime: containers/storage v1.64.2's
// pkg/chunked sets no time on a symlink and sets a directory's time before
// it fills the directory. The deployment still equals the overlay view of
// the store (both come from the same layers); the zstd-chunked case also
// compares that view with the one of a full gzip pull of the same image and
// allows exactly those differences: the mtimes of directories and symlinks.
// That path also drops devices and fifos and the owner and xattrs of
// symlinks; bootstore pulls a layer holding any of them whole
// (pkg/store's partialGuard), which the case checks too.
//
// A partial pull cannot take a layer with a file name that is not UTF-8:
// the zstd:chunked TOC is JSON, so the name no longer matches the
// tar-split's and containers/storage refuses the layer ("tar-split and TOC
// data is inconsistent") instead of falling back to a full pull. The
// zstd-chunked case checks that such an install fails cleanly, then uses
// the oracle image without its non-UTF-8 names.
func TestOracleDeploymentEqualsKernelOverlay(t *testing.T) {
	harness.RequireRoot(t)
	reg := harness.StartRegistry(t)
	for _, tc := range []struct {
		name        string
		base        func(t *testing.T) string
		compression string
		args        []string
	}{
		{"default", func(*testing.T) string { return "" }, "gzip", nil},
		{"copy", func(*testing.T) string { return "" }, "gzip", []string{"--copy-mode", "copy"}},
		{"xfs-reflink", func(t *testing.T) string {
			return filepath.Join(harness.LoopFS(t, 512<<20, harness.MkfsXFSReflink...), "host")
		}, "gzip", nil},
		{"zstd-chunked", func(*testing.T) string { return "" }, "zstd:chunked", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			oracleInstallAndCompare(t, reg, tc.base(t), tc.compression, tc.args...)
		})
	}
}

// oracleInstallAndCompare pushes the oracle image with layers in
// compression, installs it on a host made in base (see oracleHost) with the
// extra install args, and checks the deployment against the overlay view
// and everything outside ROOT. For zstd:chunked it also checks that every
// layer was pulled partially and that the store's view equals a full gzip
// pull's but for the mtimes of directories and symlinks.
func oracleInstallAndCompare(t *testing.T, reg *harness.Registry, base, compression string, args ...string) {
	t.Helper()
	h, base, sentinel := oracleHost(t, base)
	img := oracleImage(t, sentinel)
	repo := "oracle:" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	if compression == "zstd:chunked" {
		reg.Push(t, img, repo+"-nonutf8", compression)
		h.expectFailure(1, []string{reg.Ref(repo + "-nonutf8"), "tar-split and TOC data is inconsistent"},
			h.installArgs(reg.Ref(repo+"-nonutf8"), "--experimental-unified-storage")...)
		h.assertNothingLeft("an install of a zstd:chunked image with non-UTF-8 names", h.storeState())
		if entries, _ := os.ReadDir(filepath.Join(h.root, "ostree/deploy/default/deploy")); len(entries) != 0 {
			t.Errorf("the failed install left %d entries in the deploy directory", len(entries))
		}
		img = oracleUTF8Only(img)
	}
	reg.Push(t, img, repo, compression)
	ref := reg.Ref(repo)
	outside := oracleRecordOutside(t, base, sentinel, "/etc/"+oracleHostPlant)

	start := time.Now()
	out := h.ok(h.installArgs(ref, append([]string{"--experimental-unified-storage"}, args...)...)...)
	t.Logf("install took %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out.stdout))
	outside.check(t)

	deps := h.deployments("default")
	if len(deps) != 1 {
		t.Fatalf("want one deployment, got %v", deps)
	}
	dep := filepath.Join(h.root, "ostree/deploy/default/deploy", deps[0])
	if layers := h.layerDirs(ref); len(layers) != len(img.Layers) {
		t.Fatalf("the store has %d layers for %s, the image %d", len(layers), ref, len(img.Layers))
	}
	ov, got := oracleCheck(t, h, ref, dep)
	if compression == "zstd:chunked" {
		// L2 (image layer 2) holds devices, fifos and a symlink with an
		// xattr, which the partial path drops: bootstore pulls it whole.
		for i, l := range h.layersOf(ref) {
			if want := i != 2; l.Partial != want {
				t.Errorf("layer %d (%s) of the zstd:chunked image: partial %v, want %v: %+v", i, l.ID, l.Partial, want, l)
			}
		}
		reg.Push(t, img, repo+"-gzip", "gzip")
		full := newHost(t)
		full.ok(full.pullArgs("--bound-images", "skip", ref+"-gzip")...)
		compareViews(t, "the store's view after a partial pull against a full pull's", imageView(t, full, ref+"-gzip"), ov, true)
	}

	// The cases the image was made for are really there (a vacuous
	// comparison proves nothing).
	long := oracleLongDir()
	for p, check := range map[string]func(harness.Node) bool{
		"/usr/bin/su":   func(n harness.Node) bool { return n.Perm == 0o4755 },
		"/usr/bin/wall": func(n harness.Node) bool { return n.Perm == 0o2755 && n.GID == 5 },
		"/usr/bin/ping": func(n harness.Node) bool { return strings.Contains(n.Xattrs, "security.capability=") },
		"/etc/cap-tool": func(n harness.Node) bool {
			return n.Perm == 0o4755 && strings.Contains(n.Xattrs, "security.capability=")
		},
		"/usr/share/odd-dir":                   func(n harness.Node) bool { return n.Perm == 0o3311 && n.UID == 777 },
		"/tmp":                                 func(n harness.Node) bool { return n.Perm == 0o1777 },
		"/usr/share/dev/null":                  func(n harness.Node) bool { return n.Type == unix.S_IFCHR && n.Rdev == unix.Mkdev(1, 3) },
		"/usr/share/dev/loop0":                 func(n harness.Node) bool { return n.Type == unix.S_IFBLK && n.Rdev == unix.Mkdev(7, 0) },
		"/usr/share/run/fifo":                  func(n harness.Node) bool { return n.Type == unix.S_IFIFO },
		"/usr/share/sparse":                    func(n harness.Node) bool { return n.Size == 4<<20 },
		"/usr/share/empty":                     func(n harness.Node) bool { return n.Type == unix.S_IFREG && n.Size == 0 },
		"/usr/share/up":                        func(n harness.Node) bool { return n.Type == unix.S_IFDIR },
		"/usr/share/up/planted-up":             func(n harness.Node) bool { return n.Type == unix.S_IFREG },
		"/usr/share/sent/planted":              func(n harness.Node) bool { return n.Type == unix.S_IFREG },
		"/usr/share/pw":                        func(n harness.Node) bool { return n.Type == unix.S_IFREG },
		"/usr/share/ds":                        func(n harness.Node) bool { return n.Target == "doc" },
		"/usr/share/fd":                        func(n harness.Node) bool { return n.Type == unix.S_IFREG },
		"/usr/share/df/new":                    func(n harness.Node) bool { return n.Type == unix.S_IFREG },
		"/usr/share/meta":                      func(n harness.Node) bool { return n.UID == 1003 && n.Perm == 0o750 },
		"/usr/share/hs2":                       func(n harness.Node) bool { return n.Target == "target" },
		"/usr/lib/chain/c":                     func(n harness.Node) bool { return n.Target == "real2" },
		"/usr/lib/chain/b":                     func(n harness.Node) bool { return strings.Contains(n.Xattrs, "trusted.sym=") },
		"/usr/share/nonutf8/g\xff":             func(n harness.Node) bool { return n.Type == unix.S_IFREG },
		"/usr/share/bad\xff\xfe":               func(n harness.Node) bool { return n.Type == unix.S_IFREG },
		long + "/top":                          func(n harness.Node) bool { return n.Type == unix.S_IFREG },
		"/usr/share/etcdir/" + oracleHostPlant: func(n harness.Node) bool { return n.Type == unix.S_IFREG },
	} {
		if !utf8.ValidString(p) && compression == "zstd:chunked" {
			continue // not in oracleUTF8Only's image
		}
		if n, ok := ov[p]; !ok || !check(n) {
			t.Errorf("the overlay view lacks the hard case %q: %v (present %v)", p, n, ok)
		}
	}
	for _, p := range []string{"/usr/share/f1", "/usr/share/wd", "/usr/share/op/a", "/usr/share/op2/hidden", "/usr/share/op3/a",
		"/usr/share/h/b", "/usr/bin/sleep", "/usr/share/only3/w", "/usr/share/nonutf8/f\xc3(", long + "/gone", "/usr/share/wd2/x", "/var/lib/app/link"} {
		if _, ok := ov[p]; ok {
			t.Errorf("the overlay view shows %q, which a layer hides", p)
		}
	}
	og := oracleGroups(ov, oracleSame)
	if og["/usr/share/h/c"] != "" || og["/usr/share/h/a"] != "" || og["/usr/bin/cat"] != "/usr/bin/cat" || og["/usr/sbin/suid2"] != "/usr/sbin/suid" ||
		og["/usr/share/hs2"] != "/usr/share/hs1" || og["/etc/both"] != "/etc/both" || og["/var/lib/app/hl"] != "/var/lib/app/data" {
		t.Errorf("the overlay view lacks the expected hardlinks: %v", og)
	}
	// The one documented hardlink difference: a name in /etc of an inode
	// also named outside is a copy.
	if got["/etc/both"].Ino == got["/usr/share/both"].Ino || got["/etc/both"].SHA256 != got["/usr/share/both"].SHA256 {
		t.Errorf("/etc/both should be a copy of /usr/share/both, not the same inode")
	}

	// Nothing a layer planted through a symlink reached anything outside
	// the deployment: not the host, not ROOT outside the tree and the store.
	planted := map[string]bool{"planted": true, "planted-up": true, oracleHostPlant: true}
	storeDiffs := filepath.Join(h.storageRoot(), "overlay")
	filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Errorf("walking %s: %v", base, err)
			return nil
		}
		if !planted[d.Name()] {
			return nil
		}
		inTree := strings.HasPrefix(p, dep+"/usr/share/")
		inStore := strings.HasPrefix(p, storeDiffs+"/") && strings.Contains(p, "/diff/usr/share/")
		if !inTree && !inStore {
			t.Errorf("a layer planted %s outside the deployment", p)
		}
		return nil
	})
}

// oracleUTF8Only is img without its entries whose names are not UTF-8
// (and without the whiteouts of such names).
func oracleUTF8Only(img harness.Image) harness.Image {
	out := img
	out.Layers = nil
	for _, l := range img.Layers {
		var nl harness.Layer
		for _, e := range l {
			if utf8.ValidString(e.Path) {
				nl = append(nl, e)
			}
		}
		out.Layers = append(out.Layers, nl)
	}
	return out
}

// oracleTar is an uncompressed tar stream of hdrs, written verbatim.
func oracleTar(t *testing.T, hdrs ...*tar.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range hdrs {
		if h.ModTime.IsZero() {
			h.ModTime = harness.Epoch
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(bytes.Repeat([]byte("e"), int(h.Size))); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestHostileLayerIsRefused installs images whose top layer tries to write
// outside the layer (tar members "../x", links out of the layer, paths
// through a symlink of the same layer) or whose tree points bootstore's own
// fix-ups of a deployment (/etc copied to /usr/etc, the
// /usr/lib/bootc/storage link) at the host. Whatever happens, nothing
// outside ROOT may change, and a refusal must name the image and leave no
// deployment, boot entry or layer. An installed deployment must equal the
// kernel's overlay view of the layers the store holds (so a member the
// store kept inside the layer is exactly where the image put it), and no
// host content may enter it.
func TestHostileLayerIsRefused(t *testing.T) {
	harness.RequireRoot(t)
	reg := harness.StartRegistry(t)
	hostEscape := "/bootstore-hostile-escape"
	deep := strings.Repeat("../", 40)
	// From a layer's diff directory ROOT/ostree/bootc/storage/overlay/ID/diff,
	// seven steps up reach the directory holding ROOT.
	up7 := strings.Repeat("../", 7)
	regular := func(name string, size int64) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size}
	}
	// clampedOutside: containers/storage v1.64.2 unpacks a layer chrooted
	// into it, so "../x" lands at /x inside the layer: contained, not
	// refused (podman shows such an image the same way). Whether bootstore
	// should refuse these images itself is the lead's decision.
	const clampedOutside = "known: containers/storage clamps tar members that leave the layer into it instead of refusing them"
	for _, tc := range []struct {
		name string
		// raw is the hostile top layer; extra a harness layer on top.
		raw   func(sentinel string) []*tar.Header
		extra func(sentinel string) harness.Layer
		// shows are paths the deployment has when the install succeeds;
		// SENTINEL stands for the sentinel directory's path.
		shows []string
		// outside: members name paths outside the layer; an install that
		// succeeds is skipped with clampedOutside once everything held.
		outside bool
	}{
		{name: "dotdot", outside: true, shows: []string{"/escape", "/usr/share/fine"}, raw: func(string) []*tar.Header {
			return []*tar.Header{regular("usr/share/fine", 1), regular("../escape", 3)}
		}},
		{name: "dotdot-deep", outside: true, shows: []string{"/x", "/escape", hostEscape}, raw: func(string) []*tar.Header {
			return []*tar.Header{regular("../../x", 1), regular(up7+"escape", 2), regular(deep+hostEscape[1:], 2)}
		}},
		{name: "dotdot-inside", outside: true, shows: []string{"/escape"}, raw: func(string) []*tar.Header {
			return []*tar.Header{{Name: "usr/", Typeflag: tar.TypeDir, Mode: 0o755}, regular("usr/../../escape", 2)}
		}},
		{name: "hardlink-out", outside: true, raw: func(string) []*tar.Header {
			return []*tar.Header{{Name: "usr/share/hl", Typeflag: tar.TypeLink, Linkname: up7 + "sentinel/keep", Mode: 0o644}}
		}},
		{name: "symlink-out-hardlink-through", raw: func(sentinel string) []*tar.Header {
			return []*tar.Header{{Name: "usr/share/out", Typeflag: tar.TypeSymlink, Linkname: sentinel, Mode: 0o777},
				{Name: "usr/share/hl", Typeflag: tar.TypeLink, Linkname: "usr/share/out/keep", Mode: 0o644}}
		}},
		// Resolved in the chroot: the members land inside the layer, at
		// the symlinks' targets taken as paths of the layer.
		{name: "symlink-then-through", shows: []string{"SENTINEL/planted", "/sentinel/planted2"}, raw: func(sentinel string) []*tar.Header {
			return []*tar.Header{{Name: "usr/share/evil", Typeflag: tar.TypeSymlink, Linkname: sentinel, Mode: 0o777},
				regular("usr/share/evil/planted", 4),
				{Name: "usr/share/evil2", Typeflag: tar.TypeSymlink, Linkname: "../../" + up7 + "sentinel", Mode: 0o777},
				regular("usr/share/evil2/planted2", 4)}
		}},
		{name: "absolute", shows: []string{hostEscape + "-abs"}, raw: func(string) []*tar.Header {
			return []*tar.Header{regular(hostEscape+"-abs", 2)}
		}},
		// containers/storage v1.64.2 sizes a new layer with
		// fs.WalkDir(os.Root.FS()), whose ReadDir refuses names that are not
		// UTF-8: the pull fails ("readdir usr/share/\x80dir: invalid
		// argument"). It must fail cleanly.
		{name: "non-utf8-dir", extra: func(string) harness.Layer {
			return harness.WithParents(harness.Layer{{Path: "/usr/share/\x80dir/f", Type: harness.File, Data: []byte("f")}})
		}},
		// These are ordinary layers: the trap is in bootstore's fix-ups,
		// which run on the finished tree.
		{name: "etc-symlink-to-host", extra: func(sentinel string) harness.Layer {
			return harness.Layer{{Path: "/etc", Type: harness.Symlink, Link: sentinel}}
		}},
		{name: "bootc-dir-symlink-to-host", extra: func(sentinel string) harness.Layer {
			return harness.WithParents(harness.Layer{{Path: "/usr/lib/bootc", Type: harness.Symlink, Link: sentinel}})
		}},
		{name: "usr-lib-symlink-to-host", extra: func(sentinel string) harness.Layer {
			return harness.WithParents(harness.Layer{{Path: "/usr/lib", Type: harness.Symlink, Link: sentinel}})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, base, sentinel := oracleHost(t, "")
			outside := oracleRecordOutside(t, base, sentinel, hostEscape, hostEscape+"-abs", "/escape", "/x")
			opts := harness.OSImageOptions{Bootable: true, Version: "hostile"}
			if tc.extra != nil {
				opts.ExtraLayers = []harness.Layer{tc.extra(sentinel)}
			}
			layout := filepath.Join(t.TempDir(), "layout")
			if err := harness.OSImage(t, opts).WriteOCILayout(layout, "latest"); err != nil {
				t.Fatal(err)
			}
			if tc.raw != nil {
				if err := harness.AppendRawLayer(layout, "latest", oracleTar(t, tc.raw(sentinel)...)); err != nil {
					t.Fatal(err)
				}
			}
			reg.PushOCI(t, layout, "latest", "hostile:"+tc.name, "gzip")
			ref := reg.Ref("hostile:" + tc.name)

			res := h.run(h.installArgs(ref, "--experimental-unified-storage")...)
			t.Logf("exit %d: %q", res.code, strings.TrimSpace(res.stderr+res.stdout))
			outside.check(t)
			if res.code != 0 {
				if !strings.Contains(res.stderr, ref) {
					t.Errorf("the error does not name the image %s:\n%s", ref, res.stderr)
				}
				if entries, _ := os.ReadDir(filepath.Join(h.root, "ostree/deploy/default/deploy")); len(entries) != 0 {
					t.Errorf("a failed install left %d entries in the deploy directory", len(entries))
				}
				if entries, _ := os.ReadDir(filepath.Join(h.root, "boot/loader/entries")); len(entries) != 0 {
					t.Errorf("a failed install left boot entries")
				}
				if tc.raw != nil || tc.name == "non-utf8-dir" {
					h.assertStoreEmpty("a refused pull")
				}
				return
			}
			deps := h.deployments("default")
			if len(deps) != 1 {
				t.Fatalf("deployments: %v", deps)
			}
			dep := filepath.Join(h.root, "ostree/deploy/default/deploy", deps[0])
			_, got := oracleCheck(t, h, ref, dep)
			for _, p := range tc.shows {
				p = strings.Replace(p, "SENTINEL", sentinel, 1)
				if _, ok := got[p]; !ok {
					t.Errorf("the deployment lacks %q", p)
				}
			}
			for p, n := range got {
				if n.Type == unix.S_IFREG && n.SHA256 == oracleKeepSum {
					t.Errorf("the host's %s/keep entered the deployment as %q", sentinel, p)
				}
			}
			if tc.outside {
				t.Log(clampedOutside)
			}
		})
	}
}
