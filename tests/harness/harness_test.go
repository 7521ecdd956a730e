package harness

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestToolbox(t *testing.T) {
	dir := t.TempDir()
	tb := ToolboxPath(t)
	for _, n := range []string{"true", "false", "cat", "frob"} {
		if err := os.Symlink(tb, filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	f := filepath.Join(dir, "hello.txt")
	if err := os.WriteFile(f, []byte("hello harness\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(dir, "cat"), f).Output()
	if err != nil || string(out) != "hello harness\n" {
		t.Fatalf("cat: %q, %v", out, err)
	}
	for name, want := range map[string]int{"true": 0, "false": 1, "frob": 2} {
		err := exec.Command(filepath.Join(dir, name)).Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != want {
			t.Errorf("%s exited %d, want %d", name, code, want)
		}
	}
	if len(Toolbox(t)) == 0 {
		t.Fatal("empty toolbox")
	}
}

// readLayout returns the tar headers of every layer of the image tagged tag in dir.
func readLayout(t *testing.T, dir, tag string) (imgspecv1.Manifest, map[string]*tar.Header) {
	t.Helper()
	var idx imgspecv1.Index
	readJSON(t, filepath.Join(dir, "index.json"), &idx)
	var mf imgspecv1.Manifest
	for _, m := range idx.Manifests {
		if m.Annotations[imgspecv1.AnnotationRefName] == tag {
			readJSON(t, filepath.Join(dir, "blobs", "sha256", m.Digest.Encoded()), &mf)
		}
	}
	hdrs := map[string]*tar.Header{}
	for _, l := range mf.Layers {
		b, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", l.Digest.Encoded()))
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(bytes.NewReader(b))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			} else if err != nil {
				t.Fatal(err)
			}
			hdrs[h.Name] = h
		}
	}
	return mf, hdrs
}

func readJSON(t *testing.T, p string, v any) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

func TestOSImageLayout(t *testing.T) {
	img := OSImage(t, OSImageOptions{Bootable: true, Version: "7",
		BoundImages: []Bound{BoundImage("app1", "example.com/app1:v1"),
			{EntryName: "app2.container", Quadlet: "/etc/containers/systemd/app2.container", Content: "x", AbsoluteLink: true}},
		ExtraLayers: []Layer{UnboundQuadlet(QuadletDir+"/free.image", ImageQuadlet("example.com/free")),
			{{Path: "/etc/hostname", Type: Whiteout}, {Path: "/var/lib", Type: Opaque},
				{Path: "/dev", Type: Dir}, {Path: "/dev/null", Type: CharDev, DevMajor: 1, DevMinor: 3},
				{Path: "/usr/bin/x", Type: File, Xattrs: map[string]string{"user.k": "v"}}}}})
	dir := t.TempDir()
	if err := img.WriteOCILayout(dir, "v7"); err != nil {
		t.Fatal(err)
	}
	mf, h := readLayout(t, dir, "v7")
	if len(mf.Layers) != 4 {
		t.Fatalf("%d layers", len(mf.Layers))
	}
	for name, link := range map[string]string{
		"usr/lib/bootc/bound-images.d/app1.image":     "../../../share/containers/systemd/app1.image",
		"usr/lib/bootc/bound-images.d/app2.container": "/etc/containers/systemd/app2.container",
		"etc/os-release": "../usr/lib/os-release", "usr/bin/cat": "usr/bin/true",
	} {
		if h[name] == nil || h[name].Linkname != link {
			t.Errorf("%s: %+v, want link %s", name, h[name], link)
		}
	}
	for _, name := range []string{"usr/share/containers/systemd/free.image", "etc/.wh.hostname",
		"var/lib/.wh..wh..opq", "usr/lib/modules/" + KernelVersion + "/vmlinuz", "dev/null", "usr/lib/bootc/"} {
		if h[name] == nil {
			t.Errorf("missing %s", name)
		}
	}
	if h["usr/bin/x"].PAXRecords["SCHILY.xattr.user.k"] != "v" {
		t.Errorf("xattr lost: %v", h["usr/bin/x"].PAXRecords)
	}
	var cfg imgspecv1.Image
	readJSON(t, filepath.Join(dir, "blobs", "sha256", mf.Config.Digest.Encoded()), &cfg)
	if cfg.Config.Labels["containers.bootc"] != "1" || len(cfg.RootFS.DiffIDs) != 4 || len(cfg.History) != 4 {
		t.Errorf("config: %+v", cfg)
	}
	// Deterministic: the same image gives the same manifest, also gzip-compressed.
	d2 := t.TempDir()
	if err := img.WriteOCILayout(d2, "v7"); err != nil {
		t.Fatal(err)
	}
	if err := img.WriteOCILayoutGzip(d2, "gz"); err != nil {
		t.Fatal(err)
	}
	if mf2, _ := readLayout(t, d2, "v7"); mf2.Config.Digest != mf.Config.Digest {
		t.Error("not deterministic")
	}
}

func TestBigImage(t *testing.T) {
	img := BigImage(t, 3<<20, 40, 1)
	if len(img.Layers) != 5 {
		t.Fatalf("%d layers", len(img.Layers))
	}
	v2 := ChangeFiles(img, 0.25, 2)
	if len(v2.Layers) != 6 || len(img.Layers) != 5 {
		t.Fatalf("layers %d/%d", len(v2.Layers), len(img.Layers))
	}
	var total int64
	files := 0
	for _, l := range img.Layers {
		for _, e := range l {
			if e.Type == File {
				n, _ := io.Copy(io.Discard, e.Content())
				total += n
				files++
			}
		}
	}
	changed := 0
	for _, e := range v2.Layers[5] {
		if e.Type == File {
			changed++
		}
	}
	if total != 3<<20 || files != 40 || changed != 10 {
		t.Fatalf("total %d files %d changed %d", total, files, changed)
	}
}

// TestRegistryEndToEnd pushes real images to docker-registry and pulls them through the
// counting proxy with skopeo and podman.
func TestRegistryEndToEnd(t *testing.T) {
	RequireRoot(t)
	RequireCommand(t, "skopeo")
	reg := StartRegistry(t)
	sk := Skopeo{}
	start := time.Now()
	reg.Push(t, AppImage(t, "app1"), "app1:v1", "gzip")
	reg.Push(t, AppImage(t, "app2"), "app2:v1", "zstd:chunked")
	osDigest := reg.Push(t, OSImage(t, OSImageOptions{Bootable: true, Version: "1",
		BoundImages: []Bound{BoundImage("app1", reg.Ref("app1:v1")), BoundContainer("app2", reg.Ref("app2:v1"))}}),
		"os:v1", "gzip")
	t.Logf("pushed 3 images in %v", time.Since(start))
	if s := reg.Stats(); s.Requests != 0 {
		t.Fatalf("pushes went through the proxy: %+v", s)
	}

	// Pull the OS image through the proxy: every blob is fetched exactly once.
	raw, err := sk.Run(t, "inspect", "--raw", "--tls-verify=false", "docker://"+reg.Ref("os:v1"))
	if err != nil {
		t.Fatal(err)
	}
	if digest.FromString(raw) != osDigest {
		t.Errorf("manifest digest %s, pushed %s", digest.FromString(raw), osDigest)
	}
	var mf imgspecv1.Manifest
	if err := json.Unmarshal([]byte(raw), &mf); err != nil {
		t.Fatal(err)
	}
	reg.ResetStats()
	out := filepath.Join(t.TempDir(), "oci")
	if _, err := sk.Run(t, "copy", "--src-tls-verify=false", "docker://"+reg.Ref("os:v1"), "oci:"+out+":os"); err != nil {
		t.Fatal(err)
	}
	s := reg.Stats()
	if s.BlobGETs != len(mf.Layers)+1 || s.ManifestGETs < 1 {
		t.Errorf("counts after pulling os:v1: %+v", s)
	}
	var want int64
	for _, d := range append(mf.Layers, mf.Config) {
		want += d.Size
		if s.BlobGETsBy[d.Digest] != 1 {
			t.Errorf("blob %s fetched %d times", d.Digest, s.BlobGETsBy[d.Digest])
		}
	}
	if s.BlobBytes != want {
		t.Errorf("blob bytes %d, want %d", s.BlobBytes, want)
	}

	// zstd:chunked layers arrive as zstd.
	raw, err = sk.Run(t, "inspect", "--raw", "--tls-verify=false", "docker://"+reg.Ref("app2:v1"))
	if err != nil || !strings.Contains(raw, imgspecv1.MediaTypeImageLayerZstd) ||
		!strings.Contains(raw, "io.github.containers.zstd-chunked.manifest-checksum") {
		t.Errorf("app2 not zstd:chunked: %v\n%s", err, raw)
	}

	// FailPath refuses one repository with the given status.
	reg.ResetStats()
	reg.FailPath("/v2/app2/", 403)
	if _, err := sk.Run(t, "inspect", "--tls-verify=false", "docker://"+reg.Ref("app2:v1")); err == nil {
		t.Error("inspect app2 succeeded despite FailPath")
	}
	if _, err := sk.Run(t, "inspect", "--tls-verify=false", "docker://"+reg.Ref("app1:v1")); err != nil {
		t.Errorf("app1 refused too: %v", err)
	}
	faulted := 0
	for _, r := range reg.Stats().Log {
		if r.Faulted && r.Status == 403 && strings.HasPrefix(r.Path, "/v2/app2/") {
			faulted++
		}
	}
	if faulted == 0 {
		t.Errorf("no faulted 403 in %+v", reg.Stats().Log)
	}
	reg.ClearFault()

	// A corrupted blob makes the pull fail.
	raw, err = sk.Run(t, "inspect", "--raw", "--tls-verify=false", "docker://"+reg.Ref("app1:v1"))
	if err != nil {
		t.Fatal(err)
	}
	var amf imgspecv1.Manifest
	if err := json.Unmarshal([]byte(raw), &amf); err != nil {
		t.Fatal(err)
	}
	bp := reg.BlobPath(amf.Layers[0].Digest)
	if err := os.WriteFile(bp, bytes.Repeat([]byte{'x'}, int(amf.Layers[0].Size)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = sk.Run(t, "copy", "--src-tls-verify=false", "docker://"+reg.Ref("app1:v1"), "oci:"+out+":app1")
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "digest did not match") {
		t.Errorf("pull of corrupted blob: %v", err)
	}

	// Nothing answers at UnreachableAddr.
	if _, err := sk.Run(t, "inspect", "--tls-verify=false", "docker://"+UnreachableAddr(t)+"/x:y"); err == nil ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Errorf("unreachable: %v", err)
	}
}

// TestStallBlob kills a client in the middle of a blob download.
func TestStallBlob(t *testing.T) {
	RequireRoot(t)
	RequireCommand(t, "skopeo")
	reg := StartRegistry(t)
	reg.Push(t, BigImage(t, 8<<20, 10, 3), "big:v1", "gzip")
	notify := make(chan struct{})
	reg.StallBlob(1<<20, notify)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := Skopeo{}.Cmd(ctx, "copy", "--src-tls-verify=false", "docker://"+reg.Ref("big:v1"), "oci:"+t.TempDir()+":big")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-notify:
	case <-time.After(time.Minute):
		t.Fatal("no stalled blob")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// The stalled request is recorded once the proxy sees the client go away.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var stalled *Request
		for _, r := range reg.Stats().Log {
			if r.Faulted && r.Bytes > 0 {
				stalled = &r
			}
		}
		if stalled != nil {
			t.Logf("stalled %s after %d bytes", stalled.Path, stalled.Bytes)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stalled request not recorded: %+v", reg.Stats().Log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	reg.ClearFault()
	if _, err := (Skopeo{}).Run(t, "copy", "--src-tls-verify=false", "docker://"+reg.Ref("big:v1"), "oci:"+t.TempDir()+":big"); err != nil {
		t.Fatalf("pull after ClearFault: %v", err)
	}
}

// TestPodmanRun pulls the OS image through the proxy with podman and runs it, with the
// vfs and overlay drivers (NewPodman's cleanup must leave no mounts behind).
func TestPodmanRun(t *testing.T) {
	RequireRoot(t)
	RequireCommand(t, "podman")
	RequireCommand(t, "runc")
	reg := StartRegistry(t)
	reg.Push(t, OSImage(t, OSImageOptions{Bootable: true, Version: "42"}), "os:v42", "zstd:chunked")
	for _, driver := range []string{"vfs", "overlay"} {
		t.Run(driver, func(t *testing.T) {
			reg.ResetStats()
			p := NewPodman(t, driver)
			p.Env = []string{"CONTAINERS_REGISTRIES_CONF=" + RegistriesConf(t, reg.Addr)}
			if _, err := p.Run(t, "pull", reg.Ref("os:v42")); err != nil {
				t.Fatal(err)
			}
			if reg.Stats().BlobGETs == 0 {
				t.Error("podman pull fetched no blobs through the proxy")
			}
			out, err := p.Run(t, "run", "--rm", reg.Ref("os:v42"), "/usr/bin/cat", "/usr/lib/os-release")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, `VERSION_ID="42"`) {
				t.Errorf("os-release: %q", out)
			}
			if _, err := p.Run(t, "run", "--rm", reg.Ref("os:v42"), "/usr/bin/false"); err == nil {
				t.Error("false succeeded")
			}
			// A container left behind is removed by NewPodman's cleanup.
			if _, err := p.Run(t, "run", "-d", reg.Ref("os:v42"), "/usr/bin/sleep", "60"); err != nil {
				t.Fatal(err)
			}
		})
	}
}
