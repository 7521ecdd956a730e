package xattr

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// newFile makes a file in a directory whose filesystem takes user.*
// xattrs, or skips.
func newFile(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(p, "user.probe", []byte("1"), 0); err != nil {
		t.Skipf("the temporary directory's filesystem takes no user xattrs: %v", err)
	}
	if err := unix.Lremovexattr(p, "user.probe"); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSetListReplaceCopy(t *testing.T) {
	p := newFile(t, "a")
	want := []Attr{{"user.b", []byte("two")}, {"user.a", []byte("one\x00bin")}, {"user.empty", []byte{}}}
	if err := Set(Path(p), want); err != nil {
		t.Fatal(err)
	}
	got, err := List(Path(p))
	if err != nil {
		t.Fatal(err)
	}
	sorted := []Attr{want[1], want[0], want[2]}
	if !slices.EqualFunc(got, sorted, Attr.Equal) {
		t.Fatalf("List = %q, want %q sorted by name", got, sorted)
	}

	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	byFD, err := List(FD(int(f.Fd())))
	if err != nil || !slices.EqualFunc(byFD, got, Attr.Equal) {
		t.Fatalf("List by descriptor = %q, %v; by path %q", byFD, err, got)
	}

	// Replace removes what the new list lacks, except what keep protects.
	if err := Replace(Path(p), []Attr{{"user.c", []byte("3")}}, func(n string) bool { return n == "user.a" }); err != nil {
		t.Fatal(err)
	}
	got, _ = List(Path(p))
	if want := []Attr{{"user.a", []byte("one\x00bin")}, {"user.c", []byte("3")}}; !slices.EqualFunc(got, want, Attr.Equal) {
		t.Fatalf("after Replace: %q, want %q", got, want)
	}

	q := newFile(t, "b")
	if err := Copy(Path(p), Path(q)); err != nil {
		t.Fatal(err)
	}
	if copied, _ := List(Path(q)); !slices.EqualFunc(copied, got, Attr.Equal) {
		t.Fatalf("Copy gave %q, want %q", copied, got)
	}
}

// A path names the symlink itself: its target's attributes are not read
// and nothing is written through it.
func TestPathDoesNotFollowSymlinks(t *testing.T) {
	p := newFile(t, "target")
	if err := Set(Path(p), []Attr{{"user.t", []byte("target's")}}); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(filepath.Dir(p), "link")
	if err := os.Symlink(p, link); err != nil {
		t.Fatal(err)
	}
	if got, err := List(Path(link)); err != nil || len(got) != 0 {
		t.Fatalf("List(symlink) = %q, %v; want the link's own (none)", got, err)
	}
	// user.* xattrs are not allowed on symlinks: the write must fail, not
	// land on the target.
	if err := Set(Path(link), []Attr{{"user.x", []byte("1")}}); err == nil {
		t.Fatal("Set on a symlink succeeded")
	}
	if got, _ := List(Path(p)); len(got) != 1 {
		t.Fatalf("the target's xattrs changed: %q", got)
	}
}

func TestErrorsNameTheCall(t *testing.T) {
	_, err := List(Path(filepath.Join(t.TempDir(), "missing")))
	if !errors.Is(err, unix.ENOENT) {
		t.Fatalf("List of a missing file: %v, want ENOENT", err)
	}
	p := newFile(t, "a")
	err = Set(Path(p), []Attr{{"bogus.namespace", []byte("1")}})
	if err == nil {
		t.Fatal("Set of an xattr in no namespace succeeded")
	}
	if got := err.Error(); !strings.HasPrefix(got, "setxattr bogus.namespace: ") {
		t.Errorf("error %q does not name the attribute", got)
	}
}
