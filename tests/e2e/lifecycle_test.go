package e2e

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bootstore/bootstore/pkg/status/statustest"
	"github.com/bootstore/bootstore/tests/harness"
)

// etcFile is a file in an OS image's /etc.
func etcFile(name, content string) harness.Entry {
	return harness.Entry{Path: "/etc/" + name, Type: harness.File, Data: []byte(content)}
}

// osVersion builds the v1 or v2 OS image of the lifecycle tests.
func osVersion(t *testing.T, version string, bound []harness.Bound, files harness.Layer) harness.Image {
	return harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: version, BoundImages: bound,
		ExtraLayers: []harness.Layer{harness.WithParents(files)}})
}

// hostStatus is the part of `status --format json` the tests read.
type hostStatus struct {
	Status struct {
		Booted, Staged, Rollback *struct {
			Image *struct {
				Image       struct{ Image string }
				Version     *string
				ImageDigest string
			}
			CachedUpdate *struct{ ImageDigest string }
			DownloadOnly bool
			Bootstore    struct {
				Storage, Deployment string
				BoundImages         []string
			}
		}
		RollbackQueued bool
	}
}

func (h *host) status() hostStatus {
	h.t.Helper()
	out := h.ok("status", "--format", "json").stdout
	statustest.ValidateHost(h.t, []byte(out))
	var st hostStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		h.t.Fatal(err)
	}
	return st
}

func versionOf(st hostStatus, slot string) string {
	var e = map[string]any{"booted": st.Status.Booted, "staged": st.Status.Staged, "rollback": st.Status.Rollback}[slot]
	switch v := e.(type) {
	case nil:
		return ""
	default:
		data, _ := json.Marshal(v)
		var x struct{ Image struct{ Version *string } }
		json.Unmarshal(data, &x)
		if x.Image.Version == nil {
			return "null"
		}
		return *x.Image.Version
	}
}

func (h *host) deploymentDir(name string) string {
	return filepath.Join(h.root, "ostree/deploy/default/deploy", name)
}

func TestUpgradeFinalizeRebootRollback(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	reg.Push(t, harness.AppImage(t, "app1"), "apps/app1:1", "gzip")
	reg.Push(t, harness.AppImage(t, "app2-old"), "apps/app2:latest", "gzip")
	bound1 := []harness.Bound{harness.BoundImage("app1", reg.Ref("apps/app1:1")), harness.BoundImage("app2", reg.Ref("apps/app2:latest"))}
	reg.Push(t, osVersion(t, "1", bound1, harness.Layer{
		{Path: "/usr/share/os/changed", Type: harness.File, Data: []byte("v1\n")},
		{Path: "/usr/share/os/removed", Type: harness.File, Data: []byte("v1 only\n")},
		etcFile("admin-changed", "a1\n"), etcFile("untouched", "u1\n"), etcFile("deleted", "d1\n"), etcFile("mode-file", "m1\n"),
	}), "os:latest", "gzip")
	osRef := reg.Ref("os:latest")
	h.ok(h.installArgs(osRef, "--experimental-unified-storage")...)
	v1 := h.status().Status.Booted.Bootstore.Deployment

	// The admin edits the booted /etc.
	etc := filepath.Join(h.deploymentDir(v1), "etc")
	writeFile(t, filepath.Join(etc, "admin-changed"), "admin\n")
	writeFile(t, filepath.Join(etc, "admin-added"), "mine\n")
	os.Remove(filepath.Join(etc, "deleted"))
	os.Chmod(filepath.Join(etc, "mode-file"), 0o600)

	// v2: a changed and a removed file, app3 added, app2:latest retagged,
	// /etc defaults changed.
	reg.Push(t, harness.AppImage(t, "app2-new"), "apps/app2:latest", "gzip")
	reg.Push(t, harness.AppImage(t, "app3"), "apps/app3:1", "gzip")
	bound2 := append(bound1, harness.BoundContainer("app3", reg.Ref("apps/app3:1")))
	reg.Push(t, osVersion(t, "2", bound2, harness.Layer{
		{Path: "/usr/share/os/changed", Type: harness.File, Data: []byte("v2\n")},
		etcFile("admin-changed", "a2\n"), etcFile("untouched", "u2\n"), etcFile("deleted", "d2\n"), etcFile("mode-file", "m2\n"),
		etcFile("new-in-v2", "n2\n"),
	}), "os:latest", "gzip")

	if out := h.ok("upgrade", "--check", "--tls-verify=false", "--signature-policy", h.policy).stdout; !strings.Contains(out, "Update available") {
		t.Fatalf("upgrade --check:\n%s", out)
	}
	if st := h.status(); st.Status.Booted.CachedUpdate == nil || st.Status.Staged != nil {
		t.Errorf("after --check: cachedUpdate %+v, staged %+v", st.Status.Booted.CachedUpdate, st.Status.Staged)
	}
	if got := len(h.deployments("default")); got != 1 {
		t.Errorf("--check deployed something: %d deployments", got)
	}

	h.ok("upgrade", "--tls-verify=false", "--signature-policy", h.policy)
	st := h.status()
	if versionOf(st, "staged") != "2" || versionOf(st, "booted") != "1" {
		t.Fatalf("after upgrade: staged %s, booted %s", versionOf(st, "staged"), versionOf(st, "booted"))
	}
	if n := len(st.Status.Staged.Bootstore.BoundImages); n != 3 {
		t.Errorf("the staged deployment binds %d images, want 3", n)
	}
	infos := h.list()
	for _, ref := range []string{reg.Ref("apps/app1:1"), reg.Ref("apps/app2:latest"), reg.Ref("apps/app3:1")} {
		if byName(infos, ref) == nil {
			t.Errorf("bound image %s is not in the store after staging", ref)
		}
	}

	h.ok("internals", "finalize-staged")
	h.ok("internals", "simulate-reboot")
	st = h.status()
	if versionOf(st, "booted") != "2" || versionOf(st, "rollback") != "1" || st.Status.Staged != nil {
		t.Fatalf("after reboot: booted %s, rollback %s, staged %v", versionOf(st, "booted"), versionOf(st, "rollback"), st.Status.Staged)
	}
	v2 := st.Status.Booted.Bootstore.Deployment
	newEtc := filepath.Join(h.deploymentDir(v2), "etc")
	for name, want := range map[string]string{"admin-changed": "admin\n", "untouched": "u2\n", "new-in-v2": "n2\n", "admin-added": "mine\n"} {
		if data, err := os.ReadFile(filepath.Join(newEtc, name)); err != nil || string(data) != want {
			t.Errorf("/etc/%s after the merge: %q, %v; want %q", name, data, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(newEtc, "deleted")); err == nil {
		t.Errorf("/etc/deleted came back although the admin deleted it")
	}
	if fi, err := os.Stat(filepath.Join(newEtc, "mode-file")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("/etc/mode-file: the admin's mode 0600 was not kept: %v %v", fi.Mode(), err)
	}
	if _, err := os.Stat(filepath.Join(h.deploymentDir(v2), "usr/share/os/removed")); err == nil {
		t.Errorf("a file removed in v2 is still deployed")
	}
	out, err := h.podmanC.Run(t, "run", "--rm", osRef, "cat", "/usr/share/os/changed")
	if err != nil || out != "v2\n" {
		t.Errorf("podman run <booted image> cat: %q, %v", out, err)
	}

	h.ok("rollback")
	st = h.status()
	if !st.Status.RollbackQueued {
		t.Errorf("rollback should be queued before the reboot")
	}
	h.ok("internals", "simulate-reboot")
	if st = h.status(); versionOf(st, "booted") != "1" || versionOf(st, "rollback") != "2" {
		t.Errorf("after rollback and reboot: booted %s, rollback %s", versionOf(st, "booted"), versionOf(st, "rollback"))
	}
}

// A bound image the registry refuses stages nothing (bootc stages first,
// its issue 2013); the rerun after the registry recovers succeeds.
func TestUpgradeWithUnpullableBoundImageStagesNothing(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	reg.Push(t, osVersion(t, "1", nil, harness.Layer{etcFile("x", "1\n")}), "os:latest", "gzip")
	h.ok(h.installArgs(reg.Ref("os:latest"), "--experimental-unified-storage")...)
	reg.Push(t, harness.AppImage(t, "app9"), "apps/app9:1", "gzip")
	reg.Push(t, osVersion(t, "2", []harness.Bound{harness.BoundImage("app9", reg.Ref("apps/app9:1"))}, harness.Layer{etcFile("x", "2\n")}), "os:latest", "gzip")

	reg.FailPath("/v2/apps/app9/", 503)
	h.expectFailure(1, []string{reg.Ref("apps/app9:1"), "app9.image"}, "upgrade", "--tls-verify=false", "--signature-policy", h.policy)
	if st := h.status(); st.Status.Staged != nil {
		t.Errorf("a failed bound image left a staged deployment")
	}
	if got := len(h.deployments("default")); got != 1 {
		t.Errorf("a failed upgrade left %d deployments", got)
	}
	reg.ClearFault()
	h.ok("upgrade", "--tls-verify=false", "--signature-policy", h.policy)
	if st := h.status(); versionOf(st, "staged") != "2" {
		t.Errorf("the rerun did not stage v2")
	}
}

// SIGKILL at random points of `upgrade`: the booted deployment and the
// store are never broken, and the next upgrade succeeds.
func TestUpgradeSurvivesSIGKILL(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	reg.Push(t, osVersion(t, "1", nil, harness.Layer{etcFile("x", "1\n")}), "os:latest", "gzip")
	h.ok(h.installArgs(reg.Ref("os:latest"), "--experimental-unified-storage")...)
	booted := h.status().Status.Booted.Bootstore.Deployment
	reg.Push(t, harness.AppImage(t, "appk"), "apps/appk:1", "gzip")
	img := manyFilesImage(t, 3000)
	img.Layers = append(img.Layers, harness.WithParents(harness.Layer{etcFile("x", "2\n")}))
	reg.Push(t, img, "os:latest", "gzip")

	rng := rand.New(rand.NewPCG(1, 2))
	const trials = 20
	for i := 0; i < trials; i++ {
		cmd := h.command(t.Context(), "upgrade", "--tls-verify=false", "--signature-policy", h.policy, "--copy-mode", "copy")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()

		st := h.status()
		if st.Status.Booted == nil || st.Status.Booted.Bootstore.Deployment != booted {
			t.Fatalf("trial %d: the booted deployment changed or vanished: %+v", i, st.Status.Booted)
		}
		if _, err := os.Stat(filepath.Join(h.deploymentDir(booted), "usr/bin/true")); err != nil {
			t.Fatalf("trial %d: the booted deployment is damaged: %v", i, err)
		}
		if out, err := h.podmanC.Run(t, "images", "-q"); err != nil {
			t.Fatalf("trial %d: podman cannot read the store: %v\n%s", i, err, out)
		}
		h.list()
	}
	h.ok("upgrade", "--tls-verify=false", "--signature-policy", h.policy)
	if st := h.status(); versionOf(st, "staged") != "many" {
		t.Fatalf("the upgrade after %d killed ones did not stage the new image", trials)
	}
	if left := h.leftovers(); len(left) != 0 {
		t.Errorf("leftovers after the successful upgrade: %v", left)
	}
}

// TestStaleStagedRecordAfterPowerCut reproduces what the boot suite's power
// cut right after a finalization left: the boot entries swapped to v2, but
// the staged record's removal lost, so the record names the deployment
// that now boots. Acting on it as staged made rollback remove the booted
// deployment. It must be ignored, and the next finalization removes it.
func TestStaleStagedRecordAfterPowerCut(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	reg.Push(t, osVersion(t, "1", nil, harness.Layer{etcFile("motd", "v1\n")}), "os:latest", "gzip")
	h.ok(h.installArgs(reg.Ref("os:latest"), "--experimental-unified-storage")...)
	reg.Push(t, osVersion(t, "2", nil, harness.Layer{etcFile("motd", "v2\n")}), "os:latest", "gzip")
	h.ok("upgrade", "--tls-verify=false", "--signature-policy", h.policy)
	record := filepath.Join(h.root, "ostree/bootc/bootstore/staged.json")
	saved, err := os.ReadFile(record)
	if err != nil {
		t.Fatalf("the upgrade wrote no staged record: %v", err)
	}
	h.ok("internals", "finalize-staged")
	writeFile(t, record, string(saved)) // the removal the power cut lost
	h.ok("internals", "simulate-reboot")

	st := h.status()
	if versionOf(st, "booted") != "2" || versionOf(st, "rollback") != "1" || st.Status.Staged != nil {
		t.Fatalf("with the stale record: booted %s, rollback %s, staged %v", versionOf(st, "booted"), versionOf(st, "rollback"), st.Status.Staged)
	}
	v2 := st.Status.Booted.Bootstore.Deployment
	h.ok("rollback")
	if _, err := os.Stat(h.deploymentDir(v2) + ".origin"); err != nil {
		t.Fatalf("rollback removed the booted deployment's origin: %v", err)
	}
	if st := h.status(); st.Status.Staged != nil {
		t.Errorf("after rollback: staged %+v", st.Status.Staged)
	}
	// The next finalization (the path unit armed it: the record exists)
	// removes the stale record and changes nothing else.
	if out := h.ok("internals", "finalize-staged").stdout; !strings.Contains(out, "interrupted finalization") {
		t.Errorf("finalize-staged with a stale record said: %s", out)
	}
	if _, err := os.Stat(record); !os.IsNotExist(err) {
		t.Errorf("the stale staged record is still there: %v", err)
	}
	h.ok("internals", "simulate-reboot")
	if st := h.status(); versionOf(st, "booted") != "1" || versionOf(st, "rollback") != "2" {
		t.Errorf("after the rollback's reboot: booted %s, rollback %s", versionOf(st, "booted"), versionOf(st, "rollback"))
	}
}
