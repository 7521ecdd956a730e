// Package boot boots hosts installed by bootstore in QEMU and checks, from
// inside the guest, what a user would: the machine reaches multi-user with
// no failed units on the installed image, in ostree's layout, with its bound
// images runnable from the unified store.
//
// Lifecycle of a run (make boot-test):
//
//  1. TestMain re-executes the test binary in a new network namespace, so
//     that the registry the guest image names (localhost:5000) can be served
//     on the test host without clashing with anything, and builds bootstore.
//  2. The test OS's root file system is built from Debian packages by
//     mmdebstrap once per machine (cached under /var/cache/bootstore-tests
//     by the hash of its inputs); bootstore and the test units go in a top
//     layer built every run. The images are pushed zstd:chunked.
//  3. bootstore install to-disk --via-loopback writes a disk image; QEMU
//     (TCG: nested KVM is not usable here; no network) boots it with a
//     second disk holding the registry's storage, which the guest serves on
//     127.0.0.1:5000 to itself, so upgrades take the real registry path.
//  4. The test talks to a shell on the guest's second serial port.
//
// The tests need root, qemu-system-x86_64, mmdebstrap and network access to
// Debian's archive on a cold cache; they skip when something is missing.
package boot

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// bootstoreBin is built once by TestMain.
var bootstoreBin string

const netnsEnv = "BOOTSTORE_BOOT_TEST_NETNS"

// gateEnv must be 1 for the suite to run: it is slow (make boot-test sets it).
const gateEnv = "BOOTSTORE_BOOT_TEST"

func TestMain(m *testing.M) {
	if os.Getenv(gateEnv) != "1" {
		os.Exit(m.Run()) // every test skips, saying why
	}
	if os.Geteuid() == 0 && os.Getenv(netnsEnv) == "" {
		if _, err := exec.LookPath("unshare"); err == nil {
			// Run the tests in a private network namespace with only a
			// loopback interface.
			self, _ := os.Executable()
			cmd := exec.Command("unshare", append([]string{"--net", "--", "sh", "-c",
				`ip link set lo up && exec "$0" "$@"`, self}, os.Args[1:]...)...)
			// The Debian archive is reached from the host's namespace
			// (debianRootfs enters it through this process).
			cmd.Env = append(os.Environ(), netnsEnv+"="+strconv.Itoa(os.Getpid()))
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			if err := cmd.Run(); err != nil {
				if ee, ok := err.(*exec.ExitError); ok {
					os.Exit(ee.ExitCode())
				}
				fmt.Fprintln(os.Stderr, "re-executing in a network namespace:", err)
				os.Exit(1)
			}
			os.Exit(0)
		}
	}
	dir, err := os.MkdirTemp("", "bootstore-boot-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bootstoreBin = filepath.Join(dir, "bootstore")
	if prebuilt := os.Getenv("BOOTSTORE_BIN"); prebuilt != "" {
		bootstoreBin = prebuilt
	} else {
		build := exec.Command("go", "build", "-buildvcs=false",
			"-tags", "containers_image_openpgp,exclude_graphdriver_btrfs",
			"-o", bootstoreBin, "github.com/bootstore/bootstore/cmd/bootstore")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building bootstore:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
