package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bootstore/bootstore/tests/harness"
)

// unitsDir and manDir are the repository's unit files and man page sources,
// relative to this package.
const (
	unitsDir = "../../systemd"
	manDir   = "../../docs/man"
)

// unitFiles returns the paths of the repository's systemd unit files.
func unitFiles(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(unitsDir)
	if err != nil {
		t.Fatal(err)
	}
	var units []string
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".service", ".timer", ".path", ".socket", ".target", ".mount":
			units = append(units, filepath.Join(unitsDir, e.Name()))
		}
	}
	if len(units) == 0 {
		t.Fatalf("no unit files in %s", unitsDir)
	}
	return units
}

// TestUnitFilesVerify runs `systemd-analyze verify` on every unit file in
// systemd/ and fails on anything it says about them.
//
// systemd need not be PID 1: verify loads units offline. It checks that
// every Exec*= binary exists, so the units are verified with --root in a
// fresh directory that holds a copy of the system's units (the targets ours
// order against), our units and the built binary at /usr/bin/bootstore. The
// unit files are verified as they ship, unmodified. When go-md2man and man
// are installed the man pages are rendered from docs/man and every
// Documentation=man: link must resolve to one of them.
func TestUnitFilesVerify(t *testing.T) {
	harness.RequireCommand(t, "systemd-analyze")
	units := unitFiles(t)

	root := t.TempDir()
	unitDir := filepath.Join(root, "usr/lib/systemd/system")
	if err := os.MkdirAll(unitDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Debian's units live in /usr/lib/systemd/system (/lib is a symlink to
	// usr/lib); some distributions keep them in /lib/systemd/system only.
	copied := false
	for _, dir := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if _, err := os.Stat(filepath.Join(dir, "sysinit.target")); err != nil {
			continue
		}
		if out, err := exec.Command("cp", "-a", dir+"/.", unitDir+"/").CombinedOutput(); err != nil {
			t.Fatalf("copying %s: %v\n%s", dir, err, out)
		}
		copied = true
		break
	}
	if !copied {
		t.Skip("no system unit directory with sysinit.target (/usr/lib/systemd/system or /lib/systemd/system)")
	}
	if err := os.Symlink("usr/lib", filepath.Join(root, "lib")); err != nil {
		t.Fatal(err)
	}
	for _, u := range units {
		copyFile(t, u, filepath.Join(unitDir, filepath.Base(u)), 0o644)
	}
	copyFile(t, bootstoreBin, filepath.Join(root, "usr/bin/bootstore"), 0o755)

	env := os.Environ()
	manFlag := "--man=no"
	if manPath, why := renderManPages(t); manPath != "" {
		manFlag = "--man=yes"
		env = append(env, "MANPATH="+manPath)
	} else {
		t.Logf("not checking Documentation=man: links: %s", why)
	}

	names := make([]string, len(units))
	for i, u := range units {
		names[i] = filepath.Base(u)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command("systemd-analyze", "verify", "--root="+root, manFlag, name)
			cmd.Env = env
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			// Lines about our units (or the binary) fail the test; others
			// concern the system's units and are only shown.
			for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				switch {
				case strings.Contains(line, "bootstore"):
					t.Errorf("systemd-analyze verify %s: %s", name, line)
				case line != "":
					t.Logf("systemd-analyze verify %s: %s", name, line)
				}
			}
			if err != nil {
				t.Errorf("systemd-analyze verify %s: %v", name, err)
			}
		})
	}
}

// renderManPages renders docs/man/*.md with go-md2man into a man8
// directory and returns the MANPATH that finds them, or "" and why not.
func renderManPages(t *testing.T) (manPath, why string) {
	t.Helper()
	for _, tool := range []string{"go-md2man", "man"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", tool + " is not installed"
		}
	}
	sources, err := filepath.Glob(filepath.Join(manDir, "*.md"))
	if err != nil || len(sources) == 0 {
		return "", "no man pages in " + manDir
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "man8"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, src := range sources {
		page := strings.TrimSuffix(filepath.Base(src), ".md")
		if filepath.Ext(page) != ".8" {
			t.Errorf("man page source %s is not in section 8 (name it NAME.8.md)", src)
			continue
		}
		out, err := exec.Command("go-md2man", "-in", src, "-out", filepath.Join(dir, "man8", page)).CombinedOutput()
		if err != nil {
			t.Fatalf("go-md2man %s: %v\n%s", src, err, out)
		}
	}
	return dir, ""
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, mode); err != nil {
		t.Fatal(err)
	}
}

// TestUnitCommandsExist checks that every bootstore command line in the unit
// files names a command the binary has, with flags it takes. A command
// that is not implemented yet skips with the reason.
func TestUnitCommandsExist(t *testing.T) {
	for _, u := range unitFiles(t) {
		data, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			key, value, ok := strings.Cut(strings.TrimSpace(line), "=")
			if !ok || !strings.HasPrefix(key, "Exec") {
				continue
			}
			// Exec prefixes: - @ : + ! (systemd.service(5)).
			argv := strings.Fields(strings.TrimLeft(value, "-@:+!"))
			if len(argv) == 0 || argv[0] != "/usr/bin/bootstore" {
				t.Errorf("%s: %s runs %q, not /usr/bin/bootstore", filepath.Base(u), key, value)
				continue
			}
			var path, flags []string
			for _, a := range argv[1:] {
				if strings.HasPrefix(a, "-") {
					name, _, _ := strings.Cut(a, "=")
					flags = append(flags, name)
				} else if len(flags) == 0 {
					path = append(path, a)
				}
			}
			t.Run(filepath.Base(u)+":"+key, func(t *testing.T) {
				out, err := exec.Command(bootstoreBin, append(slices.Clone(path), "--help")...).CombinedOutput()
				want := "bootstore " + strings.Join(path, " ")
				if err != nil || !strings.HasPrefix(usageLine(string(out)), want) {
					t.Skipf("bootstore has no %q command yet (%v):\n%s", strings.Join(path, " "), err, out)
				}
				for _, f := range flags {
					if !strings.Contains(string(out), f+" ") && !strings.Contains(string(out), f+"\n") {
						t.Errorf("%s: `%s --help` does not list %s:\n%s", filepath.Base(u), want, f, out)
					}
				}
			})
		}
	}
}

// usageLine returns the first line after "Usage:" in cobra's help output.
func usageLine(help string) string {
	_, rest, ok := strings.Cut(help, "Usage:\n")
	if !ok {
		return ""
	}
	line, _, _ := strings.Cut(rest, "\n")
	return strings.TrimSpace(line)
}
