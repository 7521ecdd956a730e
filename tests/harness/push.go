package harness

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/pkg/compression"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"
)

// Push writes img as an OCI layout in t.TempDir() and copies it with go.podman.io/image's
// copy.Image straight to the registry (bypassing the proxy, so Stats only show pulls) as
// repoTag ("repo:tag"). compression is "gzip", "zstd" or "zstd:chunked" and is forced for
// every layer. It returns the digest of the pushed manifest.
func (r *Registry) Push(t testing.TB, img Image, repoTag, compression string) digest.Digest {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	if err := img.WriteOCILayout(dir, "latest"); err != nil {
		t.Fatalf("push %s: write OCI layout: %v", repoTag, err)
	}
	return r.PushOCI(t, dir, "latest", repoTag, compression)
}

// PushOCI copies the image tagged tag in the OCI layout dir to the registry as repoTag,
// like Push; use it to push one written layout several times (e.g. big benchmark images).
func (r *Registry) PushOCI(t testing.TB, dir, tag, repoTag, compressionName string) digest.Digest {
	t.Helper()
	return pushOCI(t, dir, tag, r.DirectRef(repoTag), compressionName, nil)
}

// pushOCI copies dir:tag to the registry reference dest; more, when set,
// adjusts the copy (signers, registries.d).
func pushOCI(t testing.TB, dir, tag, dest, compressionName string, more func(*copy.Options, *types.SystemContext)) digest.Digest {
	t.Helper()
	repoTag := dest
	algo, err := compression.AlgorithmByName(compressionName)
	if err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	src, err := layout.NewReference(dir, tag)
	if err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	dst, err := docker.ParseReference("//" + dest)
	if err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	pc, err := signature.NewPolicyContext(&signature.Policy{
		Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()}})
	if err != nil {
		t.Fatalf("push %s: policy: %v", repoTag, err)
	}
	defer func() { _ = pc.Destroy() }()
	tmp := t.TempDir()
	sys := &types.SystemContext{
		DockerInsecureSkipTLSVerify: types.OptionalBoolTrue,
		BlobInfoCacheDir:            tmp, // keep pushes out of the host's blob-info cache
		AuthFilePath:                filepath.Join(tmp, "auth.json"),
		CompressionFormat:           &algo,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	opts := &copy.Options{
		SourceCtx:              &types.SystemContext{BlobInfoCacheDir: tmp},
		DestinationCtx:         sys,
		ForceCompressionFormat: true,
	}
	if more != nil {
		more(opts, sys)
	}
	mf, err := copy.Image(ctx, pc, dst, src, opts)
	if err != nil {
		t.Fatalf("push %s (%s): %v", repoTag, compressionName, err)
	}
	d, err := manifest.Digest(mf)
	if err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	return d
}

// DeleteManifest deletes manifest d of repo ("name", no tag) from the registry directly;
// its tags disappear, its blobs stay until a registry garbage-collect.
func (r *Registry) DeleteManifest(t testing.TB, repo string, d digest.Digest) {
	t.Helper()
	req, err := http.NewRequest(http.MethodDelete,
		fmt.Sprintf("http://%s/v2/%s/manifests/%s", r.DirectAddr, repo, d), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("delete %s@%s: %v", repo, d, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("delete %s@%s: HTTP %d", repo, d, resp.StatusCode)
	}
}
