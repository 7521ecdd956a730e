package sysroot

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestBootLinkResolvesToTheDeployment(t *testing.T) {
	sr, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := Deployment{Stateroot: "default", ID: "abc123", Serial: 1,
		Origin: Origin{Transport: "docker", Image: "example.com/os:1", ImageID: "abc123", Storage: StorageUnified}}
	if err := os.MkdirAll(sr.DeploymentPath(d), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := sr.WriteOrigin(d); err != nil {
		t.Fatal(err)
	}
	if err := sr.WriteBootLink(d); err != nil {
		t.Fatal(err)
	}
	if got, want := d.KernelArg(), "/ostree/boot.0/default/abc123/1"; got != want {
		t.Fatalf("KernelArg = %s, want %s", got, want)
	}
	// What ostree-prepare-root does: the karg below the physical root
	// must be a symlink that resolves to the deployment.
	link := filepath.Join(sr.Root, d.KernelArg())
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("%s is not a symlink: %v", link, err)
	}
	got, err := filepath.EvalSymlinks(link)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := filepath.EvalSymlinks(sr.DeploymentPath(d))
	if got != want {
		t.Fatalf("boot link resolves to %s, want %s", got, want)
	}

	// Both karg forms name the deployment.
	for _, arg := range []string{d.KernelArg(), "/ostree/deploy/default/deploy/abc123.1"} {
		back, err := sr.deploymentFromArg(arg)
		if err != nil {
			t.Fatalf("%s: %v", arg, err)
		}
		if back.Name() != d.Name() || back.Stateroot != d.Stateroot {
			t.Errorf("%s names %+v", arg, back)
		}
	}
	for _, bad := range []string{"/ostree/boot.0/default/abc123", "/ostree/boot.0/default/abc123/x", "/ostree/boot.1/default/abc123/1"} {
		if _, err := sr.deploymentFromArg(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}

	// Once the deployment is unused, its link is too.
	unused, err := sr.UnusedDeploymentPaths(&State{})
	if err != nil {
		t.Fatal(err)
	}
	wantUnused := []string{filepath.Join(sr.Root, "ostree/boot.0/default/abc123"), sr.DeploymentPath(d), sr.OriginPath(d)}
	if !reflect.DeepEqual(unused, wantUnused) {
		t.Errorf("unused paths %q, want %q", unused, wantUnused)
	}
	kept, err := sr.UnusedDeploymentPaths(&State{Deployments: []Deployment{d}})
	if err != nil || len(kept) != 0 {
		t.Errorf("unused paths with the deployment kept: %q, %v", kept, err)
	}
}
