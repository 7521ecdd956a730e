package sysroot

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bootstore/bootstore/pkg/bls"
)

// Deployment is one OS deployment: a tree at
// ostree/deploy/<stateroot>/deploy/<id>.<serial> and its origin file.
type Deployment struct {
	Stateroot string
	// ID is the OS image's ID (its config digest), as ostree uses the
	// commit checksum.
	ID string
	// Serial tells apart deployments of the same image.
	Serial int
	Origin Origin
}

// Name is <id>.<serial>.
func (d Deployment) Name() string { return d.ID + "." + strconv.Itoa(d.Serial) }

// KernelArg is the ostree= kernel argument that boots the deployment: the
// path of its boot link, /ostree/boot.0/<stateroot>/<id>/<serial>.
//
// ostree-prepare-root (2022.7, Debian 12) refuses an ostree= path that is
// not a symlink, and ostree-system-generator finds the stateroot (for the
// /var mount) only in a path matching ^/ostree/boot.[01]/([^/]+)/. ostree
// itself keeps two sets of links, boot.0 and boot.1, and swaps them with
// the boot entries; here every deployment has one link that never changes
// while it exists, so swapping the entries alone is atomic.
func (d Deployment) KernelArg() string {
	return "/ostree/boot.0/" + d.Stateroot + "/" + d.ID + "/" + strconv.Itoa(d.Serial)
}

// BootLinkPath is the symlink KernelArg names.
func (s *Sysroot) BootLinkPath(d Deployment) string {
	return s.Path("ostree", "boot.0", d.Stateroot, d.ID, strconv.Itoa(d.Serial))
}

// WriteBootLink creates the deployment's boot link (crash-safely: a
// symlink renamed into place), relative so it resolves under /sysroot in
// the initramfs and under / on a booted host alike.
func (s *Sysroot) WriteBootLink(d Deployment) error {
	link := s.BootLinkPath(d)
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return fmt.Errorf("creating the boot link of %s: %w", d.Name(), err)
	}
	tmp := link + ".tmp"
	os.Remove(tmp)
	if err := os.Symlink("../../../deploy/"+d.Stateroot+"/deploy/"+d.Name(), tmp); err != nil {
		return fmt.Errorf("creating the boot link of %s: %w", d.Name(), err)
	}
	if err := os.Rename(tmp, link); err != nil {
		return fmt.Errorf("creating the boot link of %s: %w", d.Name(), err)
	}
	return syncDir(filepath.Dir(link))
}

// DeployDir is where a stateroot's deployments live.
func (s *Sysroot) DeployDir(stateroot string) string {
	return s.Path("ostree", "deploy", stateroot, "deploy")
}

// VarDir is a stateroot's persistent /var.
func (s *Sysroot) VarDir(stateroot string) string {
	return s.Path("ostree", "deploy", stateroot, "var")
}

// DeploymentPath is the deployment's tree.
func (s *Sysroot) DeploymentPath(d Deployment) string {
	return filepath.Join(s.DeployDir(d.Stateroot), d.Name())
}

// OriginPath is the deployment's origin file.
func (s *Sysroot) OriginPath(d Deployment) string { return s.DeploymentPath(d) + ".origin" }

// NextSerial returns the first serial not used by a deployment of id.
func (s *Sysroot) NextSerial(stateroot, id string) int {
	for serial := 0; ; serial++ {
		if _, err := os.Lstat(filepath.Join(s.DeployDir(stateroot), id+"."+strconv.Itoa(serial))); errors.Is(err, os.ErrNotExist) {
			return serial
		}
	}
}

// WriteOrigin writes the deployment's origin file crash-safely.
func (s *Sysroot) WriteOrigin(d Deployment) error {
	return WriteFileAtomic(s.OriginPath(d), d.Origin.Marshal(), 0o644)
}

// deploymentFromArg resolves an ostree= kernel argument to a deployment.
//
// Both forms are accepted: the boot link KernelArg writes, and the
// deployment's own path, which earlier versions wrote.
func (s *Sysroot) deploymentFromArg(arg string) (Deployment, error) {
	var stateroot, id, serialStr string
	if rest, ok := strings.CutPrefix(arg, "/ostree/boot.0/"); ok {
		parts := strings.Split(rest, "/")
		if len(parts) != 3 {
			return Deployment{}, fmt.Errorf("ostree=%s does not name a deployment", arg)
		}
		stateroot, id, serialStr = parts[0], parts[1], parts[2]
	} else {
		rest, ok := strings.CutPrefix(arg, "/ostree/deploy/")
		parts := strings.Split(rest, "/")
		if !ok || len(parts) != 3 || parts[1] != "deploy" {
			return Deployment{}, fmt.Errorf("ostree=%s does not name a deployment", arg)
		}
		stateroot = parts[0]
		if id, serialStr, ok = strings.Cut(parts[2], "."); !ok {
			return Deployment{}, fmt.Errorf("ostree=%s does not name a deployment", arg)
		}
	}
	serial, err := strconv.Atoi(serialStr)
	if err != nil || id == "" || stateroot == "" {
		return Deployment{}, fmt.Errorf("ostree=%s does not name a deployment", arg)
	}
	d := Deployment{Stateroot: stateroot, ID: id, Serial: serial}
	if d.Origin, err = ReadOrigin(s.OriginPath(d)); err != nil {
		return Deployment{}, err
	}
	return d, nil
}

// State is the host's deployments in boot order.
type State struct {
	// Deployments are in boot order: the first is booted next (when
	// nothing is staged), the second is the rollback.
	Deployments []Deployment
	// Booted indexes Deployments, or is -1 when the booted deployment is
	// not among them (or not known).
	Booted int
	// Staged is the deployment to be finalized into the boot order at
	// shutdown, if any.
	Staged *Deployment
	// StagedEntry is the boot entry the staged deployment gets when it is
	// finalized.
	StagedEntry *bls.Entry
	// StagedDownloadOnly holds the staged deployment back from
	// finalization until `upgrade --from-downloaded`.
	StagedDownloadOnly bool
	// StaleStaged is the deployment a staged record names that already
	// has a boot entry (a finalization cut short after its swap). Staged
	// is nil then; finalization removes the record.
	StaleStaged *Deployment
	// Entries are the boot entries of Deployments, in the same order.
	Entries []bls.Entry
	// CachedUpdate is what `upgrade --check` last found newer than the
	// booted image (image fields only), or nil.
	CachedUpdate *Origin
	// Warnings are what LoadReadable noticed that is not damage to a
	// record but that the user must hear (deployments with no boot entry).
	Warnings []string
}

// stagedRecord is the staged.json file.
type stagedRecord struct {
	Deployment   Deployment `json:"deployment"`
	Entry        bls.Entry  `json:"entry"`
	DownloadOnly bool       `json:"downloadOnly"`
}

// ErrNoBootEntries is returned, wrapped, when the sysroot holds deployments
// but no boot entry names any: /boot is not mounted, or an install was
// cut short. Commands that change the host refuse it, since every
// deployment would look unused (gc would remove them all).
var ErrNoBootEntries = errors.New("no boot entries")

// countDeployments counts the deployment trees of every stateroot, not
// their origins nor staging trees.
func (s *Sysroot) countDeployments() int {
	n := 0
	roots, _ := os.ReadDir(s.Path("ostree", "deploy"))
	for _, r := range roots {
		entries, _ := os.ReadDir(s.DeployDir(r.Name()))
		for _, e := range entries {
			if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				n++
			}
		}
	}
	return n
}

// BootedDeployment returns the booted deployment or nil.
func (st *State) BootedDeployment() *Deployment {
	if st.Booted < 0 || st.Booted >= len(st.Deployments) {
		return nil
	}
	return &st.Deployments[st.Booted]
}

// Rollback returns the deployment a rollback would boot, or nil.
func (st *State) Rollback() *Deployment {
	for i := range st.Deployments {
		if i != st.Booted {
			return &st.Deployments[i]
		}
	}
	return nil
}

// entryFile names the file of the i-th boot entry for messages: the file
// bls.Write gave it when that exists, else the entries directory.
func (s *Sysroot) entryFile(i int, e bls.Entry) string {
	dir := s.Path("boot", "loader", "entries")
	p := filepath.Join(dir, fmt.Sprintf("ostree-%d-%s.conf", i+1, e.Stateroot))
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return dir
}

// stagedFile records the staged deployment between staging and
// finalization.
func (s *Sysroot) stagedFile() string { return filepath.Join(s.StateDir(), "staged.json") }

// Load reads the boot entries, the origins and the staged deployment.
// The booted deployment comes from /proc/cmdline on a real host and is the
// default boot entry under --sysroot.
func (s *Sysroot) Load() (*State, error) {
	st, _, err := s.load(false)
	return st, err
}

// LoadReadable is Load for commands that only report (status): a
// deployment whose origin is damaged and a damaged staged record are left
// out of the State and returned as damage, each error naming its file, so
// that the rest of the host can still be shown. Commands that change the
// host use Load, which refuses damaged state.
func (s *Sysroot) LoadReadable() (*State, []error, error) {
	return s.load(true)
}

func (s *Sysroot) load(lenient bool) (*State, []error, error) {
	var damage []error
	entries, err := bls.Read(s.Root)
	if err != nil {
		return nil, nil, err
	}
	st := &State{Booted: -1}
	for i, e := range entries {
		arg := bls.DeploymentOf(e)
		if arg == "" {
			continue
		}
		d, err := s.deploymentFromArg(arg)
		if err != nil {
			err = fmt.Errorf("boot entry %s (%q): %w", s.entryFile(i, e), e.Title, err)
			if lenient {
				damage = append(damage, err)
				continue
			}
			return nil, nil, err
		}
		st.Deployments = append(st.Deployments, d)
		st.Entries = append(st.Entries, e)
	}
	if len(entries) == 0 {
		if n := s.countDeployments(); n > 0 {
			err := fmt.Errorf("%w in %s, but %s holds %d deployment(s): is /boot mounted? (an interrupted install leaves this too: run the install again)",
				ErrNoBootEntries, s.Path("boot", "loader"), s.Path("ostree", "deploy"), n)
			if !lenient {
				return nil, nil, err
			}
			st.Warnings = append(st.Warnings, err.Error())
		}
	}
	bootedArg, err := s.bootedArg(st)
	if err != nil {
		return nil, nil, err
	}
	for i, d := range st.Deployments {
		if d.KernelArg() == bootedArg {
			st.Booted = i
		}
	}
	data, err := os.ReadFile(s.stagedFile())
	switch {
	case err == nil:
		var rec stagedRecord
		err := json.Unmarshal(data, &rec)
		if err != nil {
			err = fmt.Errorf("reading %s: %w; the staged deployment is unknown: remove the file to discard it, then run bootstore upgrade again", s.stagedFile(), err)
		} else if rec.Deployment.Origin, err = ReadOrigin(s.OriginPath(rec.Deployment)); err != nil {
			err = fmt.Errorf("staged deployment: %w", err)
		}
		switch {
		case err == nil && st.hasEntry(rec.Deployment):
			// Staged deployments get a serial no deployment has had, so
			// this one's finalization swapped the boot entries and a power
			// cut lost only the record's removal. Acting on it as staged
			// would remove a deployment that boots.
			st.StaleStaged = &rec.Deployment
		case err == nil:
			st.Staged, st.StagedEntry, st.StagedDownloadOnly = &rec.Deployment, &rec.Entry, rec.DownloadOnly
		case lenient:
			damage = append(damage, err)
		default:
			return nil, nil, err
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, nil, err
	}
	if data, err := os.ReadFile(s.cachedUpdateFile()); err == nil {
		var o Origin
		if json.Unmarshal(data, &o) == nil {
			st.CachedUpdate = &o
		}
	}
	return st, damage, nil
}

func (s *Sysroot) cachedUpdateFile() string { return filepath.Join(s.StateDir(), "cached-update.json") }

// WriteCachedUpdate records what `upgrade --check` found; nil clears it.
func (s *Sysroot) WriteCachedUpdate(o *Origin) error {
	if o == nil {
		if err := os.Remove(s.cachedUpdateFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	data, err := json.MarshalIndent(o, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(s.cachedUpdateFile(), data, 0o644)
}

// WriteStaged records d as the staged deployment, to boot by entry once
// finalized.
func (s *Sysroot) WriteStaged(d Deployment, entry bls.Entry, downloadOnly bool) error {
	data, err := json.MarshalIndent(stagedRecord{Deployment: d, Entry: entry, DownloadOnly: downloadOnly}, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(s.stagedFile(), data, 0o644)
}

// ClearStaged forgets the staged deployment (its files are the caller's),
// durably: a removal lost to a power cut brings the record back.
func (s *Sysroot) ClearStaged() error {
	if err := os.Remove(s.stagedFile()); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	return syncDir(filepath.Dir(s.stagedFile()))
}

// hasEntry reports whether d is among the deployments with a boot entry.
func (st *State) hasEntry(d Deployment) bool {
	for _, e := range st.Deployments {
		if e.Stateroot == d.Stateroot && e.Name() == d.Name() {
			return true
		}
	}
	return false
}

// bootedFile names the deployment that was booted last, for sysroots other
// than the running system's (written by `internals simulate-reboot`).
func (s *Sysroot) bootedFile() string { return filepath.Join(s.StateDir(), "booted") }

// MarkBooted records the deployment that boots next as booted, as a reboot
// would. Only for sysroots other than "/": there, the kernel says.
func (s *Sysroot) MarkBooted(d Deployment) error {
	if s.IsHostRoot() {
		return errors.New("the booted deployment of the running system comes from /proc/cmdline")
	}
	return WriteFileAtomic(s.bootedFile(), []byte(d.KernelArg()+"\n"), 0o644)
}

func (s *Sysroot) bootedArg(st *State) (string, error) {
	if !s.IsHostRoot() {
		if data, err := os.ReadFile(s.bootedFile()); err == nil {
			arg := strings.TrimSpace(string(data))
			for _, d := range st.Deployments {
				if d.KernelArg() == arg {
					return arg, nil
				}
			}
		}
		if len(st.Deployments) == 0 {
			return "", nil
		}
		return st.Deployments[0].KernelArg(), nil
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return "", fmt.Errorf("reading the kernel command line: %w", err)
	}
	arg, _ := bls.KargValue(bls.ParseCmdline(string(cmdline)), "ostree")
	return arg, nil
}

// WriteFileAtomic writes data to path by a synced temporary file renamed
// into place, then syncs the directory.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir makes the entries last written in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// UnusedDeploymentPaths lists what the stateroots' deploy directories hold
// that no boot entry and no staged record uses: deployments dropped from
// the boot order, their origins, and the staging trees of crashed runs.
func (s *Sysroot) UnusedDeploymentPaths(st *State) ([]string, error) {
	keep := map[string]bool{}
	for _, d := range st.Deployments {
		keep[s.DeploymentPath(d)] = true
	}
	if st.Staged != nil {
		keep[s.DeploymentPath(*st.Staged)] = true
	}
	roots, err := os.ReadDir(s.Path("ostree", "deploy"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var paths []string
	for _, r := range roots {
		paths = append(paths, s.unusedBootLinks(r.Name(), keep)...)
		dir := s.DeployDir(r.Name())
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if p := filepath.Join(dir, e.Name()); !keep[strings.TrimSuffix(p, ".origin")] {
				paths = append(paths, p)
			}
		}
	}
	return paths, nil
}

// unusedBootLinks lists the boot links of a stateroot whose deployment is
// not kept (the directories of image IDs whose links are all unused).
func (s *Sysroot) unusedBootLinks(stateroot string, keep map[string]bool) []string {
	base := s.Path("ostree", "boot.0", stateroot)
	ids, err := os.ReadDir(base)
	if err != nil {
		return nil
	}
	var paths []string
	for _, id := range ids {
		serials, err := os.ReadDir(filepath.Join(base, id.Name()))
		if err != nil {
			continue
		}
		var unused []string
		for _, sr := range serials {
			if !keep[filepath.Join(s.DeployDir(stateroot), id.Name()+"."+sr.Name())] {
				unused = append(unused, filepath.Join(base, id.Name(), sr.Name()))
			}
		}
		if len(unused) == len(serials) {
			paths = append(paths, filepath.Join(base, id.Name()))
		} else {
			paths = append(paths, unused...)
		}
	}
	return paths
}
