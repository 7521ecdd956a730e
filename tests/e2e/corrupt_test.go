package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootstore/bootstore/pkg/status/statustest"
	"github.com/bootstore/bootstore/tests/harness"
)

// corruptions are the ways a state file is damaged: emptied (a crash of
// a writer that did not fsync), cut in half, and overwritten in the middle
// with bytes that are not the format.
var corruptions = []struct {
	name  string
	apply func([]byte) []byte
}{
	{"truncated", func([]byte) []byte { return nil }},
	{"halved", func(b []byte) []byte { return b[:len(b)/2] }},
	{"garbled", func(b []byte) []byte {
		out := append([]byte(nil), b...)
		junk := []byte("\x00\xff}{]\n[garbage=\\")
		at := len(out) / 3
		for i := range junk {
			if at+i < len(out) {
				out[at+i] = junk[i]
			}
		}
		return out
	}},
}

// corruptFixture is a host with a booted and a staged deployment, a bound
// image and a pinned image: every state file exists.
func corruptFixture(t *testing.T) (h *host, files map[string]string, pinned string) {
	h = newHost(t)
	reg := harness.StartRegistry(t)
	reg.Push(t, harness.AppImage(t, "clbi"), "apps/clbi:1", "gzip")
	reg.Push(t, harness.AppImage(t, "cpin"), "apps/cpin:1", "gzip")
	bound := []harness.Bound{harness.BoundImage("clbi", reg.Ref("apps/clbi:1"))}
	reg.Push(t, osVersion(t, "1", bound, harness.Layer{etcFile("x", "1\n")}), "os:latest", "gzip")
	h.ok(h.installArgs(reg.Ref("os:latest"), "--experimental-unified-storage")...)
	reg.Push(t, osVersion(t, "2", bound, harness.Layer{etcFile("x", "2\n")}), "os:latest", "gzip")
	h.ok("upgrade", "--quiet", "--tls-verify=false", "--signature-policy", h.policy)
	pinned = reg.Ref("apps/cpin:1")
	h.ok(h.pullArgs("--quiet", "--allow-non-bootable", pinned)...)
	h.ok("image", "pin", pinned)
	st := h.status()
	if st.Status.Booted == nil || st.Status.Staged == nil {
		t.Fatalf("fixture: want a booted and a staged deployment: %+v", st.Status)
	}
	booted := st.Status.Booted.Bootstore.Deployment
	entries, _ := filepath.Glob(filepath.Join(h.root, "boot/loader/entries/*.conf"))
	if len(entries) == 0 {
		t.Fatal("fixture: no boot entry")
	}
	files = map[string]string{
		"images.json":    filepath.Join(h.storageRoot(), "overlay-images/images.json"),
		"layers.json":    filepath.Join(h.storageRoot(), "overlay-layers/layers.json"),
		"bootstore.json": filepath.Join(h.storageRoot(), "bootstore.json"),
		"staged.json":    filepath.Join(h.root, "ostree/bootc/bootstore/staged.json"),
		"origin":         filepath.Join(h.root, "ostree/deploy/default/deploy", booted+".origin"),
		"boot entry":     entries[0],
		"pins.json":      filepath.Join(h.root, "ostree/bootc/bootstore/pins.json"),
	}
	for what, p := range files {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("fixture: %s: %v", what, err)
		}
	}
	return h, files, pinned
}

// Every state file damaged in turn, every command run against it: none
// panics; each succeeds or fails naming the damaged file; gc never removes
// what a damaged record might protect; after the file is restored the host
// is whole again.
func TestCorruptStateFilesAreNamed(t *testing.T) {
	h, files, pinned := corruptFixture(t)
	pinnedID := h.idOf(pinned)
	idsBefore := h.storeIDs()
	commands := [][]string{
		{"status", "--format", "json"},
		{"status"},
		{"image", "list"},
		{"upgrade", "--check", "--tls-verify=false", "--signature-policy", h.policy},
		{"gc", "--dry-run"},
		{"gc"},
	}
	for what, path := range files {
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range corruptions {
			t.Run(strings.ReplaceAll(what, " ", "-")+"/"+c.name, func(t *testing.T) {
				if err := os.WriteFile(path, c.apply(orig), 0o600); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if err := os.WriteFile(path, orig, 0o600); err != nil {
						t.Fatal(err)
					}
				})
				real, _ := filepath.EvalSymlinks(path)
				for _, args := range commands {
					res := h.run(args...)
					cmdline := strings.Join(args, " ")
					if strings.Contains(res.stderr, "panic:") || strings.Contains(res.stderr, "goroutine ") {
						t.Errorf("%s with a %s %s panicked:\n%s", cmdline, c.name, what, res)
						continue
					}
					t.Logf("%s (%s %s): exit %d: %s", cmdline, c.name, what, res.code, firstLine(res.stderr))
					if res.code != 0 && !strings.Contains(res.stderr, path) && !strings.Contains(res.stderr, real) {
						t.Errorf("%s with a %s %s: the error does not name %s:\n%s", cmdline, c.name, what, path, res.stderr)
					}
				}
				if what == "staged.json" || what == "origin" {
					h.statusShowsTheRest(what, c.name)
				}
				if err := os.WriteFile(path, orig, 0o600); err != nil {
					t.Fatal(err)
				}
				// Restored, nothing a damaged record protected is gone.
				if got := h.storeIDs(); !got[pinnedID] || len(got) != len(idsBefore) {
					t.Errorf("with a %s %s, a command removed images: before %v, after %v", c.name, what, sortedKeys(idsBefore), sortedKeys(got))
				}
				if broken := h.imagesWithoutLayers(); len(broken) != 0 {
					t.Errorf("with a %s %s, a command removed the layers of %v", c.name, what, broken)
				}
				if out, err := h.podmanC.Run(t, "images", "-q"); err != nil {
					t.Errorf("after restoring %s, podman cannot read the store: %v\n%s", what, err, out)
				}
			})
		}
	}
	// Restored, the host is what it was.
	st := h.status()
	if st.Status.Booted == nil || st.Status.Staged == nil {
		t.Errorf("after the files were restored: %+v", st.Status)
	}
	if got := h.storeIDs(); len(got) != len(idsBefore) {
		t.Errorf("the store lost images: before %v, after %v", sortedKeys(idsBefore), sortedKeys(got))
	}
}

// statusShowsTheRest checks that status, with the staged record or the
// booted deployment's origin damaged, still prints a valid document with
// the deployments it can read, and exits 1.
func (h *host) statusShowsTheRest(what, how string) {
	h.t.Helper()
	res := h.run("status", "--format", "json")
	if res.code != 1 {
		h.t.Errorf("status with a %s %s: want exit 1 after printing what it can\n%s", how, what, res)
	}
	var doc hostStatus
	if err := json.Unmarshal([]byte(res.stdout), &doc); err != nil {
		h.t.Errorf("status with a %s %s printed no document: %v\n%s", how, what, err, res)
		return
	}
	statustest.ValidateHost(h.t, []byte(res.stdout))
	switch what {
	case "staged.json":
		if doc.Status.Booted == nil || doc.Status.Staged != nil {
			h.t.Errorf("status with a %s staged.json: want the booted deployment and no staged one: %+v", how, doc.Status)
		}
	case "origin":
		if doc.Status.Staged == nil || doc.Status.Booted != nil {
			h.t.Errorf("status with the booted deployment's origin %s: want the staged deployment and no booted one: %+v", how, doc.Status)
		}
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

// imagesWithoutLayers lists images whose top layer or one of its parents is
// not in the store's layers.json.
func (h *host) imagesWithoutLayers() []string {
	layers, images := h.storeContents()
	parent := map[string]string{}
	for _, l := range layers {
		parent[l.ID] = l.Parent
	}
	var broken []string
	for _, img := range images {
		for l := img.TopLayer; l != ""; l = parent[l] {
			if _, ok := parent[l]; !ok {
				broken = append(broken, img.ID)
				break
			}
		}
	}
	return broken
}
