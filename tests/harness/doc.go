// Package harness is the shared test harness for bootstore's end-to-end tests and
// benchmarks. Everything it starts is real: Debian's docker-registry, podman, skopeo and
// the go.podman.io/image/v5 copy pipeline; nothing is mocked.
//
// A test's lifecycle:
//
//  1. Skip early when the machine cannot run it: [RequireRoot], [RequireCommand].
//  2. Start a registry: [StartRegistry] runs /usr/bin/docker-registry on a free
//     127.0.0.1 port with its storage in t.TempDir(), and puts a counting reverse proxy in
//     front of it. Clients use [Registry.Addr] / [Registry.Ref] (the proxy); pushes go to
//     [Registry.DirectAddr] so the counters only see pulls.
//  3. Build images in pure Go: an [Image] is a list of [Layer]s of [Entry] values (files,
//     dirs, links, devices, whiteouts, xattrs). Ready-made builders: [AppImage],
//     [OSImage] (bootable-looking, with logically bound images), [BigImage] and
//     [ChangeFiles] for benchmarks; [Toolbox] is a static busybox-like binary they embed.
//  4. Push: [Registry.Push] writes an OCI layout ([Image.WriteOCILayout]) and copies it to
//     the registry with gzip, zstd or zstd:chunked layers, returning the manifest digest.
//  5. Exercise the code under test (bootstore, [Podman], [Skopeo]) against the proxy, then
//     assert on [Registry.Stats] (manifest and blob requests, bytes served) after
//     [Registry.ResetStats]. Inject faults with [Registry.SetFault], [Registry.FailPath],
//     [Registry.StallBlob]; corrupt stored blobs through [Registry.BlobPath];
//     [UnreachableAddr] gives an address where nothing answers.
//  6. Teardown is automatic: t.Cleanup stops the proxy and kills the registry's process
//     group, also when the test fails (then the registry's log tail is logged).
//
// All helpers take testing.TB and fail the test (t.Fatal) on setup errors, so callers need
// no error plumbing for fixtures. Builds need the tags
// containers_image_openpgp,exclude_graphdriver_btrfs.
package harness
