package boot

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootstore/bootstore/tests/harness"
)

// guestRegistry is where the guest's images live: inside the guest it is
// docker-registry serving the update disk; on the test host, a proxy to the
// harness's registry, in the test's own network namespace.
const guestRegistry = "localhost:5000"

// boundNames are the test OS's two logically bound images.
var boundNames = []string{"bound-a", "bound-b"}

func boundRef(name string) string { return guestRegistry + "/bootstore-test/" + name + ":v1" }

// osRef is the test OS's floating tag: installs and upgrades follow it.
const osRef = guestRegistry + "/bootstore-test/os:latest"

// testShell runs a shell on the second serial port for the test to drive:
// raw mode, no echo, one command per line, framed as "BSCMD <base64>".
// Lines the test typed while the previous boot went down are still queued
// in QEMU's socket and arrive at this boot, the first of them cut by the
// reset: the shell drains what arrives before a second of silence, and runs
// only whole frames, so a fragment can never run, or leave bash inside an
// open quote for the lines after it.
const testShell = `#!/bin/bash
stty -F /dev/ttyS1 115200 raw -echo
exec </dev/ttyS1 >/dev/ttyS1 2>&1
while IFS= read -r -t 1 _; do :; done
while IFS= read -r line; do
	case $line in
	"BSCMD "*) ;;
	*) continue ;;
	esac
	if cmd=$(printf '%s' "${line#BSCMD }" | base64 -d 2>/dev/null); then
		eval "$cmd"
	fi
done
`

const testShellUnit = `[Unit]
Description=bootstore boot test shell on ttyS1
[Service]
ExecStart=/usr/local/bin/bootstore-test-shell
Restart=always
[Install]
WantedBy=multi-user.target
`

// The update disk (label "updates") holds a docker-registry storage tree;
// Debian's docker-registry.service serves it read-only on 127.0.0.1:5000.
const updatesMount = `[Unit]
Description=Update disk
[Mount]
What=/dev/disk/by-label/updates
Where=/var/updates
Options=ro
`

const registryDropIn = `[Unit]
RequiresMountsFor=/var/updates
`

// osImage is the test OS at version: the cached Debian root file system as
// one layer, and a top layer with the current bootstore, its units (timer
// and path unit enabled), the test's units, two bound images, the console
// karg; v2 and later also add a new default in /etc.
func osImage(t *testing.T, rootfs, version string) harness.Image {
	t.Helper()
	all, stats := harness.DirLayer(t, rootfs, "/")
	t.Logf("test OS base layer: %s", stats)
	// The root directory itself is no layer member.
	var base harness.Layer
	for _, e := range all {
		if strings.Trim(e.Path, "/") != "" {
			base = append(base, e)
		}
	}
	top := harness.Layer{
		fileFromHost(t, bootstoreBin, "/usr/bin/bootstore", 0o755),
		{Path: "/usr/local/bin/bootstore-test-shell", Type: harness.File, Mode: 0o755, Data: []byte(testShell)},
		{Path: "/usr/lib/systemd/system/bootstore-test-shell.service", Type: harness.File, Data: []byte(testShellUnit)},
		{Path: "/usr/lib/systemd/system/var-updates.mount", Type: harness.File, Data: []byte(updatesMount)},
		{Path: "/etc/systemd/system/docker-registry.service.d/updates.conf", Type: harness.File, Data: []byte(registryDropIn)},
		// Debian's podman defaults to crun, which the image does not have.
		{Path: "/etc/containers/containers.conf", Type: harness.File, Data: []byte("[engine]\nruntime = \"runc\"\n")},
		{Path: "/usr/lib/bootc/kargs.d/10-console.toml", Type: harness.File, Data: []byte(`kargs = ["console=ttyS0,115200"]` + "\n")},
		{Path: "/usr/share/bootstore-test/version", Type: harness.File, Data: []byte(version + "\n")},
	}
	units, err := filepath.Glob("../../systemd/bootstore-*")
	if err != nil || len(units) == 0 {
		t.Fatalf("no units in ../../systemd: %v", err)
	}
	for _, u := range units {
		top = append(top, fileFromHost(t, u, "/usr/lib/systemd/system/"+filepath.Base(u), 0o644))
	}
	enable := map[string]string{
		"bootstore-fetch-apply-updates.timer": "timers.target.wants",
		"bootstore-finalize-staged.path":      "multi-user.target.wants",
		"bootstore-test-shell.service":        "multi-user.target.wants",
	}
	for unit, wants := range enable {
		top = append(top, harness.Entry{Path: "/etc/systemd/system/" + wants + "/" + unit, Type: harness.Symlink,
			Link: "/usr/lib/systemd/system/" + unit})
	}
	for _, name := range boundNames {
		b := harness.BoundImage(name, boundRef(name))
		top = append(top,
			harness.Entry{Path: b.Quadlet, Type: harness.File, Data: []byte(b.Content)},
			harness.Entry{Path: harness.BoundImagesDir + "/" + b.EntryName, Type: harness.Symlink,
				Link: "../../../share/containers/systemd/" + b.EntryName})
	}
	if version != "v1" {
		top = append(top, harness.Entry{Path: "/etc/bootstore-test/new-default.conf", Type: harness.File,
			Data: []byte("added in " + version + "\n")})
	}
	return harness.Image{
		Layers: []harness.Layer{base, harness.WithParents(top)},
		Labels: map[string]string{"containers.bootc": "1", "org.opencontainers.image.version": version},
		Cmd:    []string{"/usr/bin/bash"},
	}
}

// fileFromHost is a layer entry with the host file src's content.
func fileFromHost(t *testing.T, src, dest string, mode int64) harness.Entry {
	t.Helper()
	fi, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	return harness.Entry{Path: dest, Type: harness.File, Mode: mode, Size: fi.Size(), Content: func() io.Reader {
		f, err := os.Open(src)
		if err != nil {
			return errReader{err}
		}
		return f
	}}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, fmt.Errorf("reading layer file: %w", r.err) }
