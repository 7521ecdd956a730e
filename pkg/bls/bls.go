// Package bls reads and writes a host's boot configuration: Boot Loader
// Specification (type 1) entries and the kernels they boot, in ostree's
// layout, so that people and tools that know bootc/ostree hosts find them
// where they expect.
//
// Lifecycle of one deployment's boot configuration:
//
//  1. FindKernel locates the kernel inside a new deployment tree
//     (usr/lib/modules/<kver>/vmlinuz) and ReadKargsD collects the kernel
//     arguments the image asks for (usr/lib/bootc/kargs.d/*.toml).
//  2. InstallKernel copies the kernel and initramfs into /boot under a name
//     derived from their content (ostree's "bootcsum"); installing the same
//     kernel twice is a no-op.
//  3. Write replaces the whole set of entries at once (ostree's "bootloader
//     swap"): the new set is written into the inactive loader.N directory and
//     the boot/loader symlink is flipped to it with rename(2). A crash at any
//     point leaves boot/loader pointing at a complete old or new set.
//  4. PruneKernels removes the kernel directories no entry uses any more.
//
// Read returns the current set; ParseCmdline and KargValue read kernel
// command lines (/proc/cmdline, an entry's options).
//
// Files owned here, relative to the sysroot ("/" on a real host):
//
//	boot/loader                          symlink to loader.0 or loader.1 (relative)
//	boot/loader.tmp                      the next symlink, briefly, during Write
//	boot/loader.N/entries/ostree-<index>-<stateroot>.conf
//	                                     one entry per deployment; index 1 is
//	                                     the default (next boot), 2 the next, ...
//	boot/ostree/<stateroot>-<bootcsum>/vmlinuz-<kver>
//	boot/ostree/<stateroot>-<bootcsum>/initramfs-<kver>.img
//
// Read only, inside a deployment tree:
//
//	usr/lib/modules/<kver>/vmlinuz, initramfs.img
//	usr/lib/bootc/kargs.d/*.toml
//
// Paths in entries (Linux, Initrd) are relative to the /boot partition, as
// the Boot Loader Specification wants: "/ostree/..." is ROOT/boot/ostree/....
//
// Nothing here takes a lock: callers that change the boot configuration hold
// the sysroot's lock (pkg/sysroot), so one writer runs at a time. Read needs
// no lock: it always sees one complete set.
package bls

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Entry is one boot entry: one deployment the bootloader offers.
type Entry struct {
	// Title is the menu title, e.g. "Debian GNU/Linux 12 (ostree:default:0)".
	// Optional; it must not contain a newline.
	Title string
	// Version is the BLS version field. Write sets it so that the first
	// entry sorts highest (ostree's rule: len(entries) - index + 1 for the
	// 1-based index), ignoring what the caller put here; Read reports it.
	Version string
	// Linux is the kernel's path relative to the /boot partition,
	// "/ostree/<stateroot>-<bootcsum>/vmlinuz-<kver>", as InstallKernel
	// returns it.
	Linux string
	// Initrd is the initramfs's path, like Linux; "" when there is none.
	Initrd string
	// Options are the kernel arguments, in order. Each is kept verbatim,
	// quotes included (`foo="a b"` is one argument). Write adds
	// "ostree=<Deployment>" if it is missing; Read returns it among them.
	Options []string
	// Stateroot is the ostree stateroot ("os name") the deployment belongs
	// to, e.g. "default". It names the entry's file. Write derives it from
	// Deployment when empty.
	Stateroot string
	// Deployment is the value of the ostree= kernel argument: the
	// deployment's path below the sysroot, e.g.
	// "/ostree/deploy/default/deploy/<id>.<serial>". Write takes it from
	// Options when empty.
	Deployment string
}

const (
	// loaderLink is boot/loader, relative to the sysroot.
	loaderLink = "boot/loader"
	// loaderTmp is the symlink Write creates and renames over loaderLink.
	loaderTmp = "boot/loader.tmp"
	// karg is the kernel argument naming an entry's deployment.
	karg = "ostree"
)

// entryName matches the file names Write gives entries; group 1 is the
// index, group 2 the stateroot.
var entryName = regexp.MustCompile(`^ostree-([0-9]+)-(.+)\.conf$`)

// DeploymentOf returns the deployment e boots: e.Deployment, or else the
// value of the ostree= kernel argument in e.Options; "" when neither is set.
func DeploymentOf(e Entry) string {
	if e.Deployment != "" {
		return e.Deployment
	}
	v, _ := KargValue(e.Options, karg)
	return v
}

// Read returns the entries of the current boot configuration, the default
// (index 1) first. A sysroot without boot/loader has none: Read returns nil,
// nil. Entry files not named like Write names them are returned after the
// others, in file name order. Errors name the file at fault.
//
// Read takes no lock. If boot/loader changes while it reads (a Write
// finished meanwhile), it reads again, so it returns one complete set.
func Read(root string) ([]Entry, error) {
	for attempt := 0; ; attempt++ {
		dir, err := currentLoader(root)
		if err != nil || dir == "" {
			return nil, err
		}
		entries, err := readLoader(root, dir)
		again, lerr := currentLoader(root)
		if lerr == nil && again == dir || attempt == 2 {
			return entries, err
		}
	}
}

// readLoader reads the entries in ROOT/boot/<dir>/entries.
func readLoader(root, dir string) ([]Entry, error) {
	entriesDir := filepath.Join(root, "boot", dir, "entries")
	des, err := os.ReadDir(entriesDir)
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(filepath.Join(root, "boot", dir)); serr != nil {
			return nil, fmt.Errorf("%s points at a missing directory: %w", filepath.Join(root, loaderLink), serr)
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading boot entries: %w", err)
	}
	type indexed struct {
		index int // 0 for names Write would not give
		name  string
		e     Entry
	}
	var found []indexed
	for _, de := range des {
		name := de.Name()
		if !strings.HasSuffix(name, ".conf") || strings.HasPrefix(name, ".") || de.IsDir() {
			continue
		}
		path := filepath.Join(entriesDir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading boot entry: %w", err)
		}
		e, err := parseEntry(data)
		if err != nil {
			return nil, fmt.Errorf("boot entry %s: %w", path, err)
		}
		ix := 0
		if m := entryName.FindStringSubmatch(name); m != nil {
			if n, err := strconv.Atoi(m[1]); err == nil && n > 0 {
				ix = n
				e.Stateroot = m[2]
			}
		}
		if e.Stateroot == "" {
			e.Stateroot = staterootOf(e.Deployment)
		}
		found = append(found, indexed{ix, name, e})
	}
	sort.SliceStable(found, func(i, j int) bool {
		a, b := found[i], found[j]
		if (a.index == 0) != (b.index == 0) {
			return a.index != 0
		}
		if a.index != b.index {
			return a.index < b.index
		}
		return a.name < b.name
	})
	var out []Entry
	for _, f := range found {
		out = append(out, f.e)
	}
	return out, nil
}

// parseEntry parses one BLS type 1 file: "key value" lines; blank lines and
// lines starting with '#' are skipped, unknown keys ignored. Several options
// lines are joined, as the specification says.
func parseEntry(data []byte) (Entry, error) {
	var e Entry
	var options []string
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		key, value := text, ""
		if i := strings.IndexAny(text, " \t"); i >= 0 {
			key, value = text[:i], strings.TrimSpace(text[i+1:])
		}
		seen[key]++
		switch key {
		case "title", "version", "linux", "initrd":
			if seen[key] > 1 {
				return Entry{}, fmt.Errorf("line %d: more than one %q line is not supported", line, key)
			}
		}
		switch key {
		case "title":
			e.Title = value
		case "version":
			e.Version = value
		case "linux":
			e.Linux = value
		case "initrd":
			e.Initrd = value
		case "options":
			options = append(options, value)
		}
	}
	if err := sc.Err(); err != nil {
		return Entry{}, err
	}
	if e.Linux == "" {
		return Entry{}, errors.New(`no "linux" line`)
	}
	e.Options = ParseCmdline(strings.Join(options, " "))
	e.Deployment, _ = KargValue(e.Options, karg)
	return e, nil
}

// staterootOf returns <stateroot> of "/ostree/deploy/<stateroot>/deploy/...",
// or "".
func staterootOf(deployment string) string {
	parts := strings.Split(strings.TrimPrefix(deployment, "/"), "/")
	// The boot link form, /ostree/boot.0/<stateroot>/<id>/<serial>.
	if len(parts) == 5 && parts[0] == "ostree" && parts[1] == "boot.0" {
		return parts[2]
	}
	if len(parts) >= 4 && parts[0] == "ostree" && parts[1] == "deploy" && parts[3] == "deploy" {
		return parts[2]
	}
	return ""
}

// currentLoader returns the directory boot/loader points at ("loader.0" or
// "loader.1"), or "" when there is no boot/loader.
func currentLoader(root string) (string, error) {
	link := filepath.Join(root, loaderLink)
	fi, err := os.Lstat(link)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading boot configuration: %w", err)
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		return "", fmt.Errorf("%s is not a symlink to loader.0 or loader.1: not an ostree-style /boot", link)
	}
	target, err := os.Readlink(link)
	if err != nil {
		return "", fmt.Errorf("reading boot configuration: %w", err)
	}
	if target != "loader.0" && target != "loader.1" {
		return "", fmt.Errorf("%s points at %q, want loader.0 or loader.1", link, target)
	}
	return target, nil
}

// Write replaces the boot configuration with entries, the default (next
// boot) first. Entry i is written to ostree-<i+1>-<stateroot>.conf with
// version len(entries)-i, and its options carry "ostree=<deployment>"
// exactly once (appended when missing).
//
// Write checks the entries before it touches anything: at least one entry;
// a stateroot and a deployment for each, no two entries for one deployment;
// Linux and Initrd present under ROOT/boot; no newlines; every option one
// argument. The errors name the entry.
//
// The swap, after ostree: the set is written into the loader.N directory
// boot/loader does not point at (removing what a crashed run left there),
// files and directories are fsynced, then a new symlink boot/loader.tmp is
// renamed over boot/loader and boot/ is fsynced. The previous loader.N
// stays until the next Write replaces it. On a sysroot without boot/loader
// the first set goes to loader.0.
func Write(root string, entries []Entry) error {
	if len(entries) == 0 {
		return errors.New("refusing to write a boot configuration without entries")
	}
	type file struct {
		name string
		data []byte
	}
	var files []file
	deployments := map[string]int{}
	for i, e := range entries {
		data, name, err := render(root, e, i, len(entries))
		if err != nil {
			return fmt.Errorf("boot entry %d (%q): %w", i+1, e.Title, err)
		}
		d := DeploymentOf(e)
		if j, dup := deployments[d]; dup {
			return fmt.Errorf("boot entries %d and %d both boot %s", j+1, i+1, d)
		}
		deployments[d] = i
		files = append(files, file{name, data})
	}

	boot := filepath.Join(root, "boot")
	if err := os.MkdirAll(boot, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", boot, err)
	}
	cur, err := currentLoader(root)
	if err != nil {
		return err
	}
	next := "loader.0"
	if cur == "loader.0" {
		next = "loader.1"
	}
	nextDir := filepath.Join(boot, next)
	tmpLink := filepath.Join(root, loaderTmp)
	// Leftovers of a crashed Write: the inactive directory and the symlink.
	if err := os.RemoveAll(nextDir); err != nil {
		return fmt.Errorf("removing leftover %s: %w", nextDir, err)
	}
	if err := os.RemoveAll(tmpLink); err != nil {
		return fmt.Errorf("removing leftover %s: %w", tmpLink, err)
	}
	entriesDir := filepath.Join(nextDir, "entries")
	if err := os.MkdirAll(entriesDir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", entriesDir, err)
	}
	for _, f := range files {
		if err := writeFileSync(filepath.Join(entriesDir, f.name), f.data, 0o644); err != nil {
			return err
		}
	}
	if grub, err := wantsGrubConfig(root); err != nil {
		return err
	} else if grub {
		datas := make([][]byte, len(files))
		for i, f := range files {
			datas[i] = f.data
		}
		cfg, err := renderGrubConfig(datas)
		if err != nil {
			return fmt.Errorf("generating the GRUB menu: %w", err)
		}
		if err := writeFileSync(filepath.Join(nextDir, "grub.cfg"), cfg, 0o644); err != nil {
			return err
		}
	}
	for _, d := range []string{entriesDir, nextDir, boot} {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	if err := os.Symlink(next, tmpLink); err != nil {
		return fmt.Errorf("creating %s: %w", tmpLink, err)
	}
	link := filepath.Join(root, loaderLink)
	if err := os.Rename(tmpLink, link); err != nil {
		return fmt.Errorf("switching %s to %s: %w", link, next, err)
	}
	if err := syncDir(boot); err != nil {
		return err
	}
	return checkpointBoot(boot)
}

// render checks entry e, the i-th of n, and returns its file's contents and
// name.
func render(root string, e Entry, i, n int) ([]byte, string, error) {
	deployment, options, err := ostreeOptions(e)
	if err != nil {
		return nil, "", err
	}
	stateroot := e.Stateroot
	if stateroot == "" {
		stateroot = staterootOf(deployment)
	}
	if err := checkStateroot(stateroot); err != nil {
		return nil, "", err
	}
	if strings.ContainsAny(e.Title, "\r\n") {
		return nil, "", fmt.Errorf("title contains a newline")
	}
	for _, p := range []struct{ key, path string }{{"linux", e.Linux}, {"initrd", e.Initrd}} {
		if p.path == "" {
			if p.key == "linux" {
				return nil, "", errors.New("no linux (kernel) path")
			}
			continue
		}
		if !strings.HasPrefix(p.path, "/") || strings.ContainsAny(p.path, " \t\r\n\"") {
			return nil, "", fmt.Errorf("%s path %q: want an absolute path below /boot without spaces or quotes", p.key, p.path)
		}
		full := filepath.Join(root, "boot", filepath.FromSlash(p.path))
		if fi, err := os.Stat(full); err != nil {
			return nil, "", fmt.Errorf("%s %s: %w", p.key, p.path, err)
		} else if !fi.Mode().IsRegular() {
			return nil, "", fmt.Errorf("%s %s: not a regular file", p.key, full)
		}
	}
	var b strings.Builder
	if e.Title != "" {
		fmt.Fprintf(&b, "title %s\n", e.Title)
	}
	fmt.Fprintf(&b, "version %d\n", n-i)
	fmt.Fprintf(&b, "options %s\n", strings.Join(options, " "))
	fmt.Fprintf(&b, "linux %s\n", e.Linux)
	if e.Initrd != "" {
		fmt.Fprintf(&b, "initrd %s\n", e.Initrd)
	}
	return []byte(b.String()), fmt.Sprintf("ostree-%d-%s.conf", i+1, stateroot), nil
}

// ostreeOptions returns e's deployment and its options with
// "ostree=<deployment>" exactly once.
func ostreeOptions(e Entry) (string, []string, error) {
	deployment := e.Deployment
	var options []string
	have := false
	for _, o := range e.Options {
		if o == "" {
			continue
		}
		if strings.ContainsAny(o, "\r\n") {
			return "", nil, fmt.Errorf("kernel argument %q contains a newline", o)
		}
		if p := ParseCmdline(o); len(p) != 1 || p[0] != o || strings.Count(o, `"`)%2 != 0 {
			return "", nil, fmt.Errorf("kernel argument %q is not one argument (unquoted space or unbalanced quote?)", o)
		}
		if v, ok := KargValue([]string{o}, karg); ok {
			if deployment == "" {
				deployment = v
			}
			if v != deployment {
				return "", nil, fmt.Errorf("kernel argument %q contradicts deployment %s", o, deployment)
			}
			if have {
				continue // exactly once
			}
			have = true
		}
		options = append(options, o)
	}
	if deployment == "" {
		return "", nil, errors.New("no deployment (neither Deployment nor an ostree= kernel argument)")
	}
	if !strings.HasPrefix(deployment, "/") || strings.ContainsAny(deployment, " \t\r\n\"") {
		return "", nil, fmt.Errorf("deployment %q: want an absolute path without spaces or quotes", deployment)
	}
	if !have {
		options = append(options, karg+"="+deployment)
	}
	return deployment, options, nil
}

// checkStateroot rejects stateroots that cannot name a file or directory.
func checkStateroot(s string) error {
	if s == "" {
		return errors.New("no stateroot (set Stateroot, or a Deployment below /ostree/deploy/<stateroot>/deploy/)")
	}
	if s == "." || s == ".." || strings.HasPrefix(s, ".") || strings.ContainsAny(s, "/ \t\r\n\"") {
		return fmt.Errorf("invalid stateroot %q", s)
	}
	return nil
}

// writeFileSync creates path (which must not exist), writes data and
// fsyncs it.
func writeFileSync(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// syncDir fsyncs a directory so that the names in it are durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
