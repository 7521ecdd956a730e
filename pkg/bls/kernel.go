package bls

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
)

// ErrNoKernel is returned, wrapped in an error that names the path, when a
// deployment tree has no kernel. Test for it with errors.Is.
var ErrNoKernel = errors.New("deployment has no kernel")

// kernelDirName matches the directories InstallKernel creates in
// boot/ostree: <stateroot>-<bootcsum>.
var kernelDirName = regexp.MustCompile(`^[^/]+-[0-9a-f]{64}$`)

// tmpPrefix starts the names of files being written; a crash leaves them
// behind and the next InstallKernel of that directory removes them.
const tmpPrefix = ".tmp-"

// FindKernel returns the kernel version and the modules directory
// (DEPLOYROOT/usr/lib/modules/<kver>) of the kernel in the deployment tree
// deployRoot: the usr/lib/modules/<kver> directory that holds a vmlinuz.
// An image is expected to ship exactly one; if it ships several, FindKernel
// picks the highest version, compared like rpm compares versions (runs of
// digits numerically, runs of letters as strings, separators ignored, so
// 6.1.0-18-amd64 is newer than 6.1.0-9-amd64). No kernel is an error that
// wraps ErrNoKernel and names the path searched, as the image names it.
func FindKernel(deployRoot string) (kver, modulesDir string, err error) {
	modules := filepath.Join(deployRoot, "usr", "lib", "modules")
	des, err := os.ReadDir(modules)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", "", fmt.Errorf("looking for a kernel: %w", err)
	}
	for _, de := range des {
		p, err := securejoin.SecureJoin(deployRoot, path.Join("usr/lib/modules", de.Name(), "vmlinuz"))
		if err != nil {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if kver == "" || compareVersions(de.Name(), kver) > 0 {
			kver = de.Name()
		}
	}
	if kver == "" {
		return "", "", fmt.Errorf("%w: no /usr/lib/modules/*/vmlinuz (a regular file inside the image)", ErrNoKernel)
	}
	return kver, filepath.Join(modules, kver), nil
}

// InstallKernel copies the kernel (vmlinuz) and the initramfs
// (initramfs.img, optional) of modulesDir, a deployment tree's
// usr/lib/modules/<kver> as FindKernel returns it, to
// ROOT/boot/ostree/<stateroot>-<bootcsum>/vmlinuz-<kver> and
// initramfs-<kver>.img. bootcsum is ostree's boot checksum: the hex SHA-256
// over the kernel's bytes followed by the initramfs's. It returns the paths
// for an Entry, relative to the /boot partition
// ("/ostree/<stateroot>-<bootcsum>/vmlinuz-<kver>"); initrd is "" when
// there is no initramfs.
//
// Each file is written to a temporary name, fsynced and renamed into place,
// so a file with its final name is always complete. A file already in place
// with the same content is left alone: installing the same kernel again
// changes nothing. A missing vmlinuz is an error that wraps ErrNoKernel and
// names the directory.
func InstallKernel(root, stateroot, modulesDir string) (linux, initrd string, err error) {
	if err := checkStateroot(stateroot); err != nil {
		return "", "", err
	}
	kver := filepath.Base(filepath.Clean(modulesDir))
	type file struct {
		src, name string
		mode      fs.FileMode
		sum       []byte
	}
	vmlinuz, err := inModulesDir(modulesDir, "vmlinuz")
	if err != nil {
		return "", "", err
	}
	files := []*file{{src: vmlinuz, name: "vmlinuz-" + kver}}
	if fi, err := os.Stat(files[0].src); errors.Is(err, fs.ErrNotExist) {
		return "", "", fmt.Errorf("%w: no vmlinuz in %s", ErrNoKernel, modulesDir)
	} else if err != nil {
		return "", "", fmt.Errorf("reading kernel: %w", err)
	} else if !fi.Mode().IsRegular() {
		return "", "", fmt.Errorf("kernel %s is not a regular file", files[0].src)
	} else {
		files[0].mode = fi.Mode().Perm()
	}
	initramfs, err := inModulesDir(modulesDir, "initramfs.img")
	if err != nil {
		return "", "", err
	}
	if fi, err := os.Stat(initramfs); err == nil {
		if !fi.Mode().IsRegular() {
			return "", "", fmt.Errorf("initramfs %s is not a regular file", initramfs)
		}
		files = append(files, &file{src: initramfs, name: "initramfs-" + kver + ".img", mode: fi.Mode().Perm()})
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", "", fmt.Errorf("reading initramfs: %w", err)
	}

	// One read for the boot checksum and each file's own checksum.
	bootcsum := sha256.New()
	for _, f := range files {
		h := sha256.New()
		if err := hashFile(f.src, io.MultiWriter(bootcsum, h)); err != nil {
			return "", "", err
		}
		f.sum = h.Sum(nil)
	}
	dirName := stateroot + "-" + hex.EncodeToString(bootcsum.Sum(nil))

	boot := filepath.Join(root, "boot")
	ostreeBoot := filepath.Join(boot, "ostree")
	dir := filepath.Join(ostreeBoot, dirName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := removeTemps(dir); err != nil {
		return "", "", err
	}
	changed := false
	for _, f := range files {
		dest := filepath.Join(dir, f.name)
		same, err := hasContent(dest, f.sum)
		if err != nil {
			return "", "", err
		}
		if same {
			continue
		}
		if err := copyAtomic(f.src, dest, f.mode, f.sum); err != nil {
			return "", "", err
		}
		changed = true
	}
	if changed {
		for _, d := range []string{dir, ostreeBoot, boot} {
			if err := syncDir(d); err != nil {
				return "", "", err
			}
		}
	}
	linux = path.Join("/ostree", dirName, files[0].name)
	if len(files) > 1 {
		initrd = path.Join("/ostree", dirName, files[1].name)
	}
	return linux, initrd, nil
}

// inModulesDir returns the path of name in modulesDir. When modulesDir is
// TREE/usr/lib/modules/<kver>, symlinks are resolved inside TREE, so that an
// absolute symlink in an image never reaches the host's own files.
func inModulesDir(modulesDir, name string) (string, error) {
	clean := filepath.Clean(modulesDir)
	kver := filepath.Base(clean)
	modules := filepath.Dir(clean)
	if filepath.Base(modules) != "modules" || filepath.Base(filepath.Dir(modules)) != "lib" ||
		filepath.Base(filepath.Dir(filepath.Dir(modules))) != "usr" {
		return filepath.Join(clean, name), nil
	}
	tree := filepath.Dir(filepath.Dir(filepath.Dir(modules)))
	p, err := securejoin.SecureJoin(tree, path.Join("usr/lib/modules", kver, name))
	if err != nil {
		return "", fmt.Errorf("resolving %s in %s: %w", name, modulesDir, err)
	}
	return p, nil
}

// hashFile writes the contents of the file at p to w.
func hashFile(p string, w io.Writer) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("reading %s: %w", p, err)
	}
	defer f.Close()
	if _, err := io.Copy(w, f); err != nil {
		return fmt.Errorf("reading %s: %w", p, err)
	}
	return nil
}

// hasContent reports whether p is a regular file whose SHA-256 is sum.
func hasContent(p string, sum []byte) (bool, error) {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking %s: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		return false, nil
	}
	h := sha256.New()
	if err := hashFile(p, h); err != nil {
		return false, err
	}
	return bytes.Equal(h.Sum(nil), sum), nil
}

// copyAtomic copies src to dest through a temporary file in dest's
// directory, checking that the copied bytes hash to sum (the source must not
// change under us), and renames it into place after an fsync.
func copyAtomic(src, dest string, mode fs.FileMode, sum []byte) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("reading %s: %w", src, err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dest), tmpPrefix+filepath.Base(dest)+"-")
	if err != nil {
		return fmt.Errorf("creating a temporary file for %s: %w", dest, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), in); err != nil {
		return fmt.Errorf("copying %s to %s: %w", src, dest, err)
	}
	if !bytes.Equal(h.Sum(nil), sum) {
		return fmt.Errorf("copying %s: the file changed while it was being installed", src)
	}
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("copying %s to %s: %w", src, dest, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), dest); err != nil {
		return fmt.Errorf("installing %s: %w", dest, err)
	}
	return nil
}

// removeTemps removes the temporary files a crashed InstallKernel left in
// dir.
func removeTemps(dir string) error {
	des, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading %s: %w", dir, err)
	}
	for _, de := range des {
		if strings.HasPrefix(de.Name(), tmpPrefix) {
			p := filepath.Join(dir, de.Name())
			if err := os.RemoveAll(p); err != nil {
				return fmt.Errorf("removing leftover %s: %w", p, err)
			}
		}
	}
	return nil
}

// PruneKernels removes the kernel directories in ROOT/boot/ostree
// (<stateroot>-<bootcsum>) that neither an entry of keep nor an entry of the
// current boot configuration (Read) references through its Linux or Initrd
// path. Drop an entry with Write first, then prune its kernel; the kernels
// the bootloader can boot now are never removed. Anything in boot/ostree not
// named like InstallKernel names its directories is left alone.
func PruneKernels(root string, keep []Entry) error {
	unused, err := UnusedKernels(root, keep)
	if err != nil {
		return fmt.Errorf("pruning kernels: %w", err)
	}
	for _, p := range unused {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("pruning kernel %s: %w", p, err)
		}
	}
	if len(unused) > 0 {
		return syncDir(filepath.Join(root, "boot", "ostree"))
	}
	return nil
}

// UnusedKernels lists the kernel directories under ROOT/boot/ostree that
// neither keep nor the current boot entries reference (only directories
// named <stateroot>-<bootcsum> are considered); PruneKernels removes them.
func UnusedKernels(root string, keep []Entry) ([]string, error) {
	current, err := Read(root)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, e := range append(append([]Entry(nil), keep...), current...) {
		for _, p := range []string{e.Linux, e.Initrd} {
			if d := kernelDirOf(p); d != "" {
				used[d] = true
			}
		}
	}
	ostreeBoot := filepath.Join(root, "boot", "ostree")
	des, err := os.ReadDir(ostreeBoot)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var unused []string
	for _, de := range des {
		if de.IsDir() && kernelDirName.MatchString(de.Name()) && !used[de.Name()] {
			unused = append(unused, filepath.Join(ostreeBoot, de.Name()))
		}
	}
	return unused, nil
}

// kernelDirOf returns <dir> of a BLS path "/ostree/<dir>/<file>", or "".
func kernelDirOf(p string) string {
	parts := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	if len(parts) == 3 && parts[0] == "ostree" {
		return parts[1]
	}
	return ""
}

// compareVersions compares two version strings as rpm does (rpmvercmp,
// without its ~ and ^ rules): both are split into runs of digits and runs of
// letters, everything else separates; digit runs compare as numbers and are
// newer than letter runs; letter runs compare as strings; when one string
// runs out first, the longer one is newer. Equal results fall back to plain
// string order so that the choice is deterministic. It returns -1, 0 or 1.
func compareVersions(a, b string) int {
	if c := rpmvercmp(a, b); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

func rpmvercmp(a, b string) int {
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	isAlpha := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isAlnum := func(c byte) bool { return isDigit(c) || isAlpha(c) }
	run := func(s string, class func(byte) bool) (string, string) {
		i := 0
		for i < len(s) && class(s[i]) {
			i++
		}
		return s[:i], s[i:]
	}
	for {
		for len(a) > 0 && !isAlnum(a[0]) {
			a = a[1:]
		}
		for len(b) > 0 && !isAlnum(b[0]) {
			b = b[1:]
		}
		if a == "" || b == "" {
			break
		}
		class := isAlpha
		numeric := isDigit(a[0])
		if numeric {
			class = isDigit
		}
		var sa, sb string
		sa, a = run(a, class)
		sb, b = run(b, class)
		if sb == "" { // different kinds of run: numbers are newer
			if numeric {
				return 1
			}
			return -1
		}
		if numeric {
			sa, sb = strings.TrimLeft(sa, "0"), strings.TrimLeft(sb, "0")
			if len(sa) != len(sb) {
				if len(sa) > len(sb) {
					return 1
				}
				return -1
			}
		}
		if c := strings.Compare(sa, sb); c != 0 {
			return c
		}
	}
	switch {
	case a == "" && b == "":
		return 0
	case a == "":
		return -1
	default:
		return 1
	}
}
