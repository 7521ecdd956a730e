package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootstore/bootstore/tests/harness"
)

// One mutating command at a time. While an upgrade is held in its pull (the
// registry stalls its blob requests), every other mutating command exits 5
// naming the lock and changes nothing a host admin would see; status and
// image list answer every time and say the same thing. Once the registry
// answers, the upgrade stages as if it had been alone.
func TestMutatingCommandsSerialize(t *testing.T) {
	reg := harness.StartRegistry(t)
	reg.Push(t, harness.AppImage(t, "conc"), "apps/conc:1", "gzip")
	bound := []harness.Bound{harness.BoundImage("conc", reg.Ref("apps/conc:1"))}
	reg.Push(t, osVersion(t, "1", bound, harness.Layer{etcFile("version", "1\n")}), "os:v1", "gzip")
	h := newHost(t)
	h.ok(h.installArgs(reg.Ref("os:v1"), "--experimental-unified-storage")...)
	reg.Push(t, osVersion(t, "2", bound, harness.Layer{etcFile("version", "2\n")}), "os:v1", "gzip")
	reg.Push(t, osVersion(t, "3", bound, harness.Layer{etcFile("version", "3\n")}), "os:other", "gzip")
	set := filepath.Join(t.TempDir(), "set")
	h.ok(h.saveArgs(reg.Ref("os:other"), "oci:"+set)...)

	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open)
	reg.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/blobs/") {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-release
		}
		return false
	})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	upgrade := h.command(ctx, h.upgradeArgs()...)
	var upOut bytes.Buffer
	upgrade.Stdout, upgrade.Stderr = &upOut, &upOut
	if err := upgrade.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(2 * time.Minute):
		open()
		upgrade.Wait()
		t.Fatalf("the upgrade never asked for a blob:\n%s", upOut.String())
	}

	// finalize-staged is the one command that waits for the lock, as
	// ostree's does: at shutdown, an upgrade still running must be let
	// finish and its deployment finalized, not refused.
	finalize := h.command(ctx, "internals", "finalize-staged")
	var finOut bytes.Buffer
	finalize.Stdout, finalize.Stderr = &finOut, &finOut
	if err := finalize.Start(); err != nil {
		t.Fatal(err)
	}
	finalized := make(chan error, 1)
	go func() { finalized <- finalize.Wait() }()

	before := h.adminView()
	wantList := h.list()
	others := [][]string{
		h.upgradeArgs(),
		{"switch", "--tls-verify=false", "--signature-policy", h.policy, reg.Ref("os:other")},
		{"switch", "--transport", "oci", set},
		{"upgrade", "--image-set", "oci:" + set, "--signature-policy", h.policy},
		{"rollback"},
		{"gc"},
		{"gc", "--dry-run"},
		h.pullArgs(reg.Ref("os:other")),
		{"image", "load", "oci:" + set},
		{"image", "pin", reg.Ref("apps/conc:1")},
		{"image", "unpin", reg.Ref("apps/conc:1")},
		{"image", "set-unified", "--tls-verify=false", "--signature-policy", h.policy},
	}
	for _, args := range others {
		select {
		case err := <-finalized:
			t.Fatalf("finalize-staged finished while the upgrade held the lock (%v):\n%s", err, finOut.String())
		default:
		}
		start := time.Now()
		res := h.run(args...)
		t.Logf("bootstore %s: exit %d in %s", strings.Join(args, " "), res.code, time.Since(start).Round(time.Millisecond))
		if res.code != 5 || !strings.Contains(res.stderr, "another bootstore command") {
			t.Errorf("bootstore %s during an upgrade: want exit 5 naming the lock\n%s", strings.Join(args, " "), res)
		}
		if after := h.adminView(); after != before {
			t.Errorf("bootstore %s during an upgrade changed the host:\nbefore:\n%s\nafter:\n%s", strings.Join(args, " "), before, after)
		}
		// Readers answer while the upgrade runs, and agree with what was
		// there before it.
		st := h.status()
		if v := versionOf(st, "booted"); v != "1" {
			t.Errorf("status during the upgrade: booted %q, want 1", v)
		}
		if st.Status.Staged != nil {
			t.Errorf("status during the upgrade shows a staged deployment before it is written")
		}
		if got := h.list(); !sameImages(got, wantList) {
			t.Errorf("image list during the upgrade changed:\nbefore: %+v\nnow: %+v", wantList, got)
		}
	}

	open()
	start := time.Now()
	err := upgrade.Wait()
	t.Logf("the upgrade finished %s after the registry answered again", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("the held upgrade failed once released: %v\n%s", err, upOut.String())
	}
	select {
	case err := <-finalized:
		t.Logf("finalize-staged, started during the upgrade:\n%s", finOut.String())
		if err != nil {
			t.Fatalf("finalize-staged, waiting for the upgrade, failed: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("finalize-staged did not finish after the upgrade did:\n%s", finOut.String())
	}
	st := h.status()
	if st.Status.Staged != nil {
		t.Errorf("finalize-staged ran after the upgrade, yet a deployment is still staged")
	}
	h.ok("internals", "simulate-reboot")
	if v := versionOf(h.status(), "booted"); v != "2" {
		t.Errorf("after the reboot: booted %q, want 2 (the upgrade finalize-staged waited for)", v)
	}
}

// adminView is what a refused command must not change: deployments, boot
// entries, the staged record and the pins.
func (h *host) adminView() string {
	h.t.Helper()
	var lines []string
	for _, glob := range []string{"ostree/deploy/*/deploy/*", "boot/loader/entries/*", "ostree/bootc/bootstore/*.json"} {
		matches, _ := filepath.Glob(filepath.Join(h.root, glob))
		for _, m := range matches {
			line, _ := filepath.Rel(h.root, m)
			if fi, err := os.Stat(m); err == nil && fi.Mode().IsRegular() {
				data, _ := os.ReadFile(m)
				line += " " + strings.Join(strings.Fields(string(data)), " ")
			}
			lines = append(lines, line)
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// sameImages compares image lists by ID, names and roles: sizes may move
// while an upgrade writes layers that these images share.
func sameImages(a, b []imageInfo) bool {
	key := func(infos []imageInfo) string {
		var ks []string
		for _, i := range infos {
			ks = append(ks, i.ID+" "+strings.Join(i.Names, ",")+" "+strings.Join(i.Roles, ","))
		}
		slices.Sort(ks)
		data, _ := json.Marshal(ks)
		return string(data)
	}
	return key(a) == key(b)
}
