package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// toolboxSource is a tiny static busybox: it acts by the basename of argv[0] (or, when
// called as "toolbox", by argv[1]).
const toolboxSource = `package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func main() {
	name, args := filepath.Base(os.Args[0]), os.Args[1:]
	if name == "toolbox" && len(args) > 0 {
		name, args = args[0], args[1:]
	}
	switch name {
	case "true":
		os.Exit(0)
	case "false":
		os.Exit(1)
	case "echo":
		fmt.Println(strings.Join(args, " "))
	case "sleep":
		if len(args) != 1 {
			usage()
		}
		s, err := strconv.ParseFloat(args[0], 64)
		if err != nil {
			usage()
		}
		time.Sleep(time.Duration(s * float64(time.Second)))
	case "cat":
		if len(args) == 0 {
			io.Copy(os.Stdout, os.Stdin)
		}
		rc := 0
		for _, a := range args {
			f, err := os.Open(a)
			if err != nil {
				fmt.Fprintln(os.Stderr, "cat:", err)
				rc = 1
				continue
			}
			io.Copy(os.Stdout, f)
			f.Close()
		}
		os.Exit(rc)
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: true | false | cat [FILE...] | echo [ARG...] | sleep SECONDS")
	os.Exit(2)
}
`

var toolbox struct {
	once sync.Once
	path string
	data []byte
	err  error
}

// ToolboxPath returns the path of the static toolbox binary (built once per test process,
// cached across processes under os.TempDir()). Invoked as true, false, cat, echo or sleep
// (by argv[0] basename) it behaves like that command; anything else exits 2 with usage.
func ToolboxPath(t testing.TB) string {
	t.Helper()
	toolbox.once.Do(func() { toolbox.path, toolbox.data, toolbox.err = buildToolbox() })
	if toolbox.err != nil {
		t.Fatalf("build toolbox: %v", toolbox.err)
	}
	return toolbox.path
}

// Toolbox returns the bytes of the static toolbox binary (see ToolboxPath); callers must
// not modify the returned slice.
func Toolbox(t testing.TB) []byte {
	t.Helper()
	ToolboxPath(t)
	return toolbox.data
}

func buildToolbox() (string, []byte, error) {
	sum := sha256.Sum256([]byte(toolboxSource + runtime.Version() + runtime.GOARCH))
	cache := filepath.Join(cacheDir(), "toolbox-"+hex.EncodeToString(sum[:8]))
	if b, err := os.ReadFile(cache); err == nil {
		return cache, b, nil
	}
	src, err := os.MkdirTemp(cacheDir(), "toolbox-src-")
	if err != nil {
		return "", nil, err
	}
	defer os.RemoveAll(src)
	files := map[string]string{"go.mod": "module toolbox\n\ngo 1.21\n", "main.go": toolboxSource}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(src, n), []byte(c), 0o644); err != nil {
			return "", nil, err
		}
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(src, "toolbox")
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH,
		"GOFLAGS=-buildvcs=false", "GOWORK=off", "GOTOOLCHAIN=local")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("go build: %v\n%s", err, b)
	}
	if err := os.Rename(out, cache); err != nil {
		return "", nil, err
	}
	b, err := os.ReadFile(cache)
	return cache, b, err
}

// cacheDir is a per-machine scratch directory for files shared by test processes.
func cacheDir() string {
	d := filepath.Join(os.TempDir(), "bootstore-harness")
	_ = os.MkdirAll(d, 0o755)
	return d
}
