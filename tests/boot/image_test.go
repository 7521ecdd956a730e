package boot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bootstore/bootstore/tests/harness"
)

// The test OS: Debian 12 built by mmdebstrap, cached per machine by the hash
// of everything below (packages, hooks); bootstore and the test's units go in
// a separate top layer so that a code change rebuilds only that layer.

// cacheRoot holds built root file systems, one directory per input hash:
// /var/cache/bootstore-tests, or $BOOTSTORE_TEST_CACHE.
func cacheRoot() string {
	if dir := os.Getenv("BOOTSTORE_TEST_CACHE"); dir != "" {
		return dir
	}
	return "/var/cache/bootstore-tests"
}

const suite = "bookworm"

const mirror = "http://deb.debian.org/debian"

// backports gives the kernel: overlayfs data-only lower layers, which a
// composefs deployment is mounted with, need Linux 6.5 (bookworm has 6.1).
const backports = "deb " + mirror + " " + suite + "-backports main"

// osPackages of the test OS. dracut + ostree-boot give the initramfs with
// ostree-prepare-root; grub-pc-bin the BIOS GRUB install to-disk uses; the
// kernel comes from bookworm-backports (see backports).
var osPackages = []string{
	"systemd-sysv", "udev", "dbus", "kmod", "util-linux", "mount", "procps",
	"linux-image-cloud-amd64/" + suite + "-backports", "dracut", "ostree-boot", "zstd",
	"podman", "runc", "conmon", "grub-pc-bin", "e2fsprogs", "xfsprogs",
	"docker-registry", "ca-certificates",
}

// osSetupHook runs before the packages are installed: it puts bootstore's
// dracut module (contrib/dracut, its directory given as $2) in, so that the
// kernel's postinst builds a generic (not host-only) initramfs with
// ostree's module and bootstore's, which mounts composefs deployments and
// hands every other deployment to ostree-prepare-root.
const osSetupHook = `set -e
mkdir -p "$1/etc/dracut.conf.d" "$1/usr/lib/dracut/modules.d"
cp -r "$2" "$1/usr/lib/dracut/modules.d/50bootstore"
printf 'hostonly="no"\nadd_dracutmodules+=" ostree bootstore "\ncompress="zstd"\n' > "$1/etc/dracut.conf.d/bootstore.conf"
`

// dracutModule is the repository's dracut module directory.
const dracutModule = "../../contrib/dracut/50bootstore"

// customizeHook turns the installed system into a bootc-style image.
const customizeHook = `set -e
R="$1"
KVER=$(ls "$R/usr/lib/modules")
mv "$R/boot/vmlinuz-$KVER" "$R/usr/lib/modules/$KVER/vmlinuz"
mv "$R/boot/initrd.img-$KVER" "$R/usr/lib/modules/$KVER/initramfs.img"
rm -rf "$R"/boot/* "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/log/*.log
mkdir -p "$R/sysroot"
ln -s sysroot/ostree "$R/ostree"
echo bootstore-guest > "$R/etc/hostname"
: > "$R/etc/machine-id"
: > "$R/etc/fstab"
# No password for root on the serial console.
sed -i 's/^root:[^:]*:/root::/' "$R/etc/shadow"
mkdir -p "$R/etc/containers/registries.conf.d"
cat > "$R/etc/containers/storage.conf" <<'CONF'
[storage]
driver = "overlay"
graphroot = "/var/lib/containers/storage"
runroot = "/run/containers/storage"

[storage.options]
additionalimagestores = ["/usr/lib/bootc/storage"]
CONF
cat > "$R/etc/containers/registries.conf.d/50-localhost.conf" <<'CONF'
[[registry]]
location = "localhost:5000"
insecure = true
CONF
# The registry on the update disk (see the test's units).
mkdir -p "$R/etc/docker/registry"
cat > "$R/etc/docker/registry/config.yml" <<'CONF'
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/updates
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: true
http:
  addr: 127.0.0.1:5000
  secret: bootstore-guest
CONF
`

// rootfsKey hashes the inputs of the root file system.
func rootfsKey() string {
	h := sha256.New()
	fmt.Fprintf(h, "v2\n%s\n%s\n%s\n%s\n--\n%s\n--\n%s", suite, mirror, backports, strings.Join(osPackages, ","), osSetupHook, customizeHook)
	files, _ := filepath.Glob(filepath.Join(dracutModule, "*"))
	sort.Strings(files)
	for _, f := range files {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(h, "\n--%s\n%s", filepath.Base(f), data)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// debianRootfs returns the directory of the test OS's root file system,
// building it with mmdebstrap when the cache has none.
func debianRootfs(t *testing.T) string {
	t.Helper()
	harness.RequireCommand(t, "mmdebstrap")
	dir := filepath.Join(cacheRoot(), "rootfs-"+rootfsKey())
	if _, err := os.Stat(filepath.Join(dir, "usr/lib/os-release")); err == nil {
		return dir
	}
	if err := os.MkdirAll(cacheRoot(), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	hooks := t.TempDir()
	setup := filepath.Join(hooks, "setup.sh")
	customize := filepath.Join(hooks, "customize.sh")
	os.WriteFile(setup, []byte(osSetupHook), 0o755)
	os.WriteFile(customize, []byte(customizeHook), 0o755)
	moduleDir, err := filepath.Abs(dracutModule)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	args := []string{"mmdebstrap", "--variant=apt", "--components=main", "--mode=root",
		"--include=" + strings.Join(osPackages, ","),
		"--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
		"--dpkgopt=path-exclude=/usr/share/locale/*",
		"--setup-hook=sh " + setup + ` "$1" ` + moduleDir, "--customize-hook=sh " + customize + ` "$1"`,
		suite, tmp, mirror, backports}
	if pid := os.Getenv(netnsEnv); pid != "" {
		// The tests run in a network namespace of their own: download
		// from the host's.
		args = append([]string{"nsenter", "--target", pid, "--net", "--"}, args...)
	}
	// A cold build took 2.5 minutes (12 on a slow day): past 25, the
	// archive is unreachable or stalled, and the log says where.
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	log, err := os.Create(dir + ".log")
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		os.RemoveAll(tmp)
		data, _ := os.ReadFile(dir + ".log")
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		t.Fatalf("mmdebstrap: %v after %s; the end of %s:\n%s", err, time.Since(start).Round(time.Second), dir+".log", data)
	}
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("built the test OS root file system in %s (cold cache) at %s", time.Since(start).Round(time.Second), dir)
	return dir
}
