package bls

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
	securejoin "github.com/cyphar/filepath-securejoin"
)

// KargsDir is where an image ships its kernel arguments, relative to a
// deployment tree (bootc's kargs.d).
const KargsDir = "usr/lib/bootc/kargs.d"

// kargsFile is one kargs.d file, in bootc's format:
//
//	kargs = ["console=ttyS0,115200n8", "nosmt"]
//	match-architectures = ["x86_64", "aarch64"]   # optional
//
// kargs is required; any other key is an error, as in bootc.
type kargsFile struct {
	Kargs              []string `toml:"kargs"`
	MatchArchitectures []string `toml:"match-architectures"`
}

// ReadKargsD returns the kernel arguments the deployment tree deployRoot
// asks for in usr/lib/bootc/kargs.d/*.toml, in bootc's format and order:
// files in lexical order of their names, each file's kargs in order. A file
// with match-architectures applies only if the list holds RustArch(goarch);
// goarch "" means runtime.GOARCH. A missing directory means no arguments.
// A malformed file, a file without kargs, or one with a key bootc does not
// know is an error that names the file. Symlinks are resolved inside
// deployRoot.
func ReadKargsD(deployRoot, goarch string) ([]string, error) {
	if goarch == "" {
		goarch = runtime.GOARCH
	}
	arch := RustArch(goarch)
	dir, err := securejoin.SecureJoin(deployRoot, KargsDir)
	if err != nil {
		return nil, fmt.Errorf("resolving %s in %s: %w", KargsDir, deployRoot, err)
	}
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading kernel arguments: %w", err)
	}
	names := make([]string, 0, len(des))
	for _, de := range des {
		if strings.HasSuffix(de.Name(), ".toml") {
			names = append(names, de.Name())
		}
	}
	sort.Strings(names)
	var out []string
	for _, name := range names {
		display := "/" + path.Join(KargsDir, name) // as the image names it; callers say which tree
		p, err := securejoin.SecureJoin(deployRoot, path.Join(KargsDir, name))
		if err != nil {
			return nil, fmt.Errorf("kargs.d file %s: %w", display, err)
		}
		if fi, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("kargs.d file %s: a symlink to nothing inside the image", display)
		} else if err != nil {
			return nil, fmt.Errorf("kargs.d file %s: %w", display, err)
		} else if fi.IsDir() {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("kargs.d file %s: %w", display, err)
		}
		args, err := parseKargs(data, arch)
		if err != nil {
			return nil, fmt.Errorf("kargs.d file %s: %w", display, err)
		}
		out = append(out, args...)
	}
	return out, nil
}

// parseKargs parses one kargs.d file and returns its kargs if it applies to
// arch (a Rust architecture name).
func parseKargs(data []byte, arch string) ([]string, error) {
	var f kargsFile
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		return nil, err
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("unknown key(s) %s (want kargs and optionally match-architectures)", strings.Join(keys, ", "))
	}
	if !md.IsDefined("kargs") {
		return nil, errors.New("missing kargs")
	}
	if md.IsDefined("match-architectures") {
		match := false
		for _, a := range f.MatchArchitectures {
			if a == arch {
				match = true
				break
			}
		}
		if !match {
			return nil, nil
		}
	}
	return f.Kargs, nil
}

// RustArch maps a Go architecture name (runtime.GOARCH) to the name Rust
// uses (std::env::consts::ARCH), which kargs.d's match-architectures holds:
// amd64 is x86_64, arm64 is aarch64, 386 is x86, ppc64 and ppc64le are
// powerpc64, loong64 is loongarch64, mipsle is mips and mips64le is mips64;
// other names (riscv64, s390x, arm, ...) are the same in both.
func RustArch(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "386":
		return "x86"
	case "ppc64", "ppc64le":
		return "powerpc64"
	case "loong64":
		return "loongarch64"
	case "mipsle":
		return "mips"
	case "mips64le":
		return "mips64"
	}
	return goarch
}

// ParseCmdline splits a kernel command line (the contents of /proc/cmdline,
// or an entry's options) into arguments at spaces, tabs and newlines
// outside double quotes, as the kernel does. Quotes are kept verbatim:
// `foo="a b" quiet` is [`foo="a b"`, `quiet`]. An unterminated quote runs to
// the end of the line.
func ParseCmdline(cmdline string) []string {
	var args []string
	var cur strings.Builder
	inQuote, inArg := false, false
	for i := 0; i < len(cmdline); i++ {
		c := cmdline[i]
		switch {
		case c == '"':
			inQuote = !inQuote
			inArg = true
			cur.WriteByte(c)
		case !inQuote && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			inArg = true
			cur.WriteByte(c)
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}

// KargValue returns the value of the kernel argument key in args (as
// ParseCmdline returns them) and whether it is present. "key=value" yields
// value with surrounding double quotes removed, as the kernel passes it on;
// a bare "key" yields "", true. When key appears several times the last one
// wins, as for most kernel parameters.
func KargValue(args []string, key string) (string, bool) {
	value, found := "", false
	for _, a := range args {
		if strings.HasPrefix(a, `"`) { // "key=value with spaces"
			a = strings.TrimSuffix(a[1:], `"`)
		}
		name, v, hasValue := strings.Cut(a, "=")
		if name != key {
			continue
		}
		found = true
		value = ""
		if hasValue {
			if strings.HasPrefix(v, `"`) {
				v = strings.TrimSuffix(v[1:], `"`)
			}
			value = v
		}
	}
	return value, found
}
