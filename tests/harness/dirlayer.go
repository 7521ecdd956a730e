package harness

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// DirStats counts what DirLayer put into a layer and what it left out.
type DirStats struct {
	Entries   int   // entries in the layer (parents added by WithParents not counted)
	Files     int   // regular files (inodes; further names are Hardlinks)
	Dirs      int   // directories
	Symlinks  int   // symbolic links
	Hardlinks int   // further names of a regular file already in the layer
	Bytes     int64 // size of the regular files, each inode once
	Skipped   int   // sockets, fifos, devices, unreadable entries, names that are not UTF-8
}

func (s DirStats) String() string {
	return fmt.Sprintf("%d entries (%d files, %d dirs, %d symlinks, %d hardlinks), %.1f MB, %d skipped",
		s.Entries, s.Files, s.Dirs, s.Symlinks, s.Hardlinks, float64(s.Bytes)/(1<<20), s.Skipped)
}

// DirLayer returns a layer holding the host directory hostDir (itself included) at the
// image path imageDir, with missing parents of imageDir added (WithParents). Owners,
// modes (setuid/setgid/sticky included), modification times, extended attributes
// (except security.selinux) and hardlinks within hostDir are kept; symlinks are kept
// verbatim and never followed; other filesystems below hostDir are not entered.
//
// File contents are not read now: every file becomes an Entry whose Content opens the
// host file when the layer is written and closes it at the end, so a layer of gigabytes
// costs only its metadata in memory. A file that shrinks in between is padded with
// zeros and one that grows is cut at the size seen here, so the tar stays valid.
//
// Sockets, fifos, devices (a 0/0 character device would read as a whiteout),
// entries that cannot be read (lstat, readlink or open fails) and names that are not
// valid UTF-8 are skipped and counted in DirStats.Skipped.
func DirLayer(t testing.TB, hostDir, imageDir string) (Layer, DirStats) {
	t.Helper()
	hostDir = filepath.Clean(hostDir)
	var root unix.Stat_t
	if err := unix.Stat(hostDir, &root); err != nil {
		t.Fatalf("DirLayer %s: %v", hostDir, err)
	}
	var st DirStats
	var l Layer
	seen := map[[2]uint64]string{} // (dev, ino) of multiply linked files -> image path
	err := filepath.WalkDir(hostDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == hostDir {
				return err
			}
			st.Skipped++ // unreadable directory: leave it out
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(hostDir, p)
		ip := path.Join("/", imageDir, filepath.ToSlash(rel))
		if !utf8.ValidString(ip) {
			st.Skipped++
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		var s unix.Stat_t
		if err := unix.Lstat(p, &s); err != nil {
			st.Skipped++
			return nil
		}
		if s.Mode&unix.S_IFMT == unix.S_IFDIR && s.Dev != root.Dev {
			st.Skipped++ // a mount point: another filesystem
			return fs.SkipDir
		}
		e := Entry{Path: ip, Mode: int64(s.Mode & 0o7777), UID: int(s.Uid), GID: int(s.Gid),
			ModTime: time.Unix(s.Mtim.Unix()).UTC()}
		switch s.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			e.Type = Dir
			st.Dirs++
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil || !utf8.ValidString(target) {
				st.Skipped++
				return nil
			}
			e.Type, e.Link = Symlink, target
			st.Symlinks++
		case unix.S_IFREG:
			key := [2]uint64{uint64(s.Dev), s.Ino}
			if first, ok := seen[key]; ok && s.Nlink > 1 {
				e.Type, e.Link = Hardlink, first
				st.Hardlinks++
				break
			}
			f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
			if err != nil {
				st.Skipped++
				return nil
			}
			f.Close()
			if s.Nlink > 1 {
				seen[key] = ip
			}
			e.Type, e.Size = File, s.Size
			e.Content = hostFileContent(p, s.Size)
			st.Files++
			st.Bytes += s.Size
		default:
			st.Skipped++ // socket, fifo, device
			return nil
		}
		e.Xattrs = hostXattrs(p)
		l = append(l, e)
		st.Entries++
		return nil
	})
	if err != nil {
		t.Fatalf("DirLayer %s: %v", hostDir, err)
	}
	return WithParents(l), st
}

// hostXattrs reads the extended attributes of p (not following a symlink), without
// security.selinux; nil when there are none or they cannot be read.
func hostXattrs(p string) map[string]string {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz <= 0 {
		return nil
	}
	buf := make([]byte, sz)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return nil
	}
	var out map[string]string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" || name == "security.selinux" || !utf8.ValidString(name) {
			continue
		}
		vsz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			continue
		}
		v := make([]byte, vsz)
		vn, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = string(v[:vn])
	}
	return out
}

// hostFileContent streams exactly size bytes of the host file p: it is opened on the
// first Read and closed at the end (writeEntry never closes a Content reader).
func hostFileContent(p string, size int64) func() io.Reader {
	return func() io.Reader { return &hostFileReader{path: p, left: size} }
}

type hostFileReader struct {
	path string
	f    *os.File
	left int64
	pad  bool // the file ended early: the rest is zeros
}

func (r *hostFileReader) Read(b []byte) (int, error) {
	if r.left <= 0 {
		r.close()
		return 0, io.EOF
	}
	if int64(len(b)) > r.left {
		b = b[:r.left]
	}
	if r.pad {
		clear(b)
		r.left -= int64(len(b))
		return len(b), nil
	}
	if r.f == nil {
		f, err := os.Open(r.path)
		if err != nil {
			return 0, fmt.Errorf("DirLayer: %w", err)
		}
		r.f = f
	}
	n, err := r.f.Read(b)
	r.left -= int64(n)
	if errors.Is(err, io.EOF) {
		r.close()
		r.pad, err = true, nil
	}
	if r.left <= 0 {
		r.close()
	}
	return n, err
}

func (r *hostFileReader) close() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}
