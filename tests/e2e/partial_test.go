package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/bootstore/bootstore/tests/harness"
)

// Annotations of a zstd:chunked layer (containers/storage's
// pkg/chunked/internal/minimal) and of an eStargz layer.
const (
	zstdChunkedTOCDigest   = "io.github.containers.zstd-chunked.manifest-checksum"
	zstdChunkedTOCPosition = "io.github.containers.zstd-chunked.manifest-position"
	zstdChunkedTarSplitPos = "io.github.containers.zstd-chunked.tarsplit-position"
	estargzTOCDigest       = "containerd.io/snapshot/stargz/toc.digest"
)

// layerInfo is the per-layer part of `image list --format json`.
type layerInfo struct {
	ID               string `json:"id"`
	DiffID           string `json:"diffID"`
	CompressedDigest string `json:"compressedDigest"`
	TOCDigest        string `json:"tocDigest"`
	Pull             string `json:"pull"`
	Partial          bool   `json:"partial"`
}

// layersOf returns the layers `image list --format json` reports for name.
func (h *host) layersOf(name string) []layerInfo {
	h.t.Helper()
	res := h.ok("image", "list", "--format", "json")
	var infos []struct {
		Names  []string    `json:"names"`
		Layers []layerInfo `json:"layers"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &infos); err != nil {
		h.t.Fatalf("image list --format json: %v\n%s", err, res.stdout)
	}
	for _, i := range infos {
		if slices.Contains(i.Names, name) {
			return i.Layers
		}
	}
	h.t.Fatalf("image list does not show %s:\n%s", name, res.stdout)
	return nil
}

// tocEntry is the part of a zstd:chunked TOC entry the tests read.
type tocEntry struct {
	Type      string `json:"type"`
	Name      string `json:"name"`
	Digest    string `json:"digest"`
	Offset    int64  `json:"offset"`
	EndOffset int64  `json:"endOffset"`
}

// position parses an "offset:length:..." annotation.
func position(t testing.TB, v string) (offset, length, uncompressed int64) {
	t.Helper()
	f := strings.Split(v, ":")
	if len(f) < 3 {
		t.Fatalf("bad position annotation %q", v)
	}
	n := make([]int64, 3)
	for i := range n {
		var err error
		if n[i], err = strconv.ParseInt(f[i], 10, 64); err != nil {
			t.Fatalf("bad position annotation %q", v)
		}
	}
	return n[0], n[1], n[2]
}

// readTOC reads the TOC of a zstd:chunked layer from the registry's
// storage; it returns the TOC's JSON and its compressed and the tar-split's
// compressed sizes (what a partial pull fetches besides file contents).
func readTOC(t testing.TB, reg *harness.Registry, desc imgspecv1.Descriptor) (tocJSON []byte, tocLen, tarSplitLen int64) {
	t.Helper()
	if desc.Annotations[zstdChunkedTOCDigest] == "" {
		t.Fatalf("layer %s is not zstd:chunked: %v", desc.Digest, desc.Annotations)
	}
	blob, err := os.ReadFile(reg.BlobPath(desc.Digest))
	if err != nil {
		t.Fatal(err)
	}
	off, n, _ := position(t, desc.Annotations[zstdChunkedTOCPosition])
	_, tarSplitLen, _ = position(t, desc.Annotations[zstdChunkedTarSplitPos])
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	tocJSON, err = dec.DecodeAll(blob[off:off+n], nil)
	if err != nil {
		t.Fatalf("decompressing the TOC of %s: %v", desc.Digest, err)
	}
	return tocJSON, n, tarSplitLen
}

func tocEntries(t testing.TB, tocJSON []byte) []tocEntry {
	t.Helper()
	var toc struct{ Entries []tocEntry }
	if err := json.Unmarshal(tocJSON, &toc); err != nil {
		t.Fatal(err)
	}
	return toc.Entries
}

// partialBound is the bound on what a partial pull of image next
// may fetch into a store that holds image prev: for every layer of next
// that prev lacks, its TOC and tar-split, plus the compressed size of every
// file whose content prev lacks.
type partialBound struct {
	files, fileBytes, metaBytes int64
}

func (b partialBound) total() int64 { return b.fileBytes + b.metaBytes }

func computePartialBound(t testing.TB, reg *harness.Registry, prev, next imgspecv1.Manifest) partialBound {
	t.Helper()
	have := map[digest.Digest]bool{}
	content := map[string]bool{}
	for _, l := range prev.Layers {
		have[l.Digest] = true
		j, _, _ := readTOC(t, reg, l)
		for _, e := range tocEntries(t, j) {
			content[e.Digest] = true
		}
	}
	var b partialBound
	for _, l := range next.Layers {
		if have[l.Digest] {
			continue
		}
		j, tocLen, tsLen := readTOC(t, reg, l)
		b.metaBytes += tocLen + tsLen
		for _, e := range tocEntries(t, j) {
			if e.Type == "reg" && e.Digest != "" && !content[e.Digest] {
				b.files++
				b.fileBytes += e.EndOffset - e.Offset
				content[e.Digest] = true
			}
		}
	}
	return b
}

// imageView mounts an image's layers in h's store as the kernel's overlay
// and describes it.
func imageView(t *testing.T, h *host, name string) harness.Tree {
	t.Helper()
	return harness.Snapshot(t, oracleMount(t, h.layerDirs(name)))
}

// compareViews fails on every path where two views of one image differ,
// inode identity aside. With partial set, the mtimes of directories and
// symlinks may differ: containers/storage v1.64.2's partial path
// (pkg/chunked) sets no time on a symlink and sets a directory's time before
// it creates the directory's entries, which then move it to the time of the
// pull. The root directory's mtime is the time of the pull either way.
func compareViews(t *testing.T, what string, want, got harness.Tree, partial bool) {
	t.Helper()
	paths := want.Paths()
	for p := range got {
		if _, ok := want[p]; !ok {
			paths = append(paths, p)
		}
	}
	bad := 0
	for _, p := range paths {
		w, wok := want[p]
		g, gok := got[p]
		w.Dev, w.Ino, g.Dev, g.Ino = 0, 0, 0, 0
		if p == "/" || partial && w.Type == g.Type && (w.Type == unix.S_IFLNK || w.Type == unix.S_IFDIR) {
			g.Mtime = w.Mtime
		}
		if wok == gok && w == g {
			continue
		}
		t.Errorf("%s: %q differs:\n  want %v (present %v)\n  got  %v (present %v)", what, p, w, wok, g, gok)
		if bad++; bad > 20 {
			t.Fatalf("%s: too many differences", what)
		}
	}
}

// upgradeArgs are the registry flags of `bootstore upgrade` against the
// test registry.
func (h *host) upgradeArgs() []string {
	return []string{"upgrade", "--tls-verify=false", "--signature-policy", h.policy}
}

// expectedFiles returns the sha256 of every regular file of img's merged
// tree (later layers win; no whiteouts are used by the images here).
func expectedFiles(t testing.TB, img harness.Image) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range img.Layers {
		for _, e := range l {
			if e.Type != harness.File {
				continue
			}
			h := sha256.New()
			if e.Content != nil {
				if _, err := io.Copy(h, e.Content()); err != nil {
					t.Fatal(err)
				}
			} else {
				h.Write(e.Data)
			}
			out[path.Clean("/"+e.Path)] = hex.EncodeToString(h.Sum(nil))
		}
	}
	return out
}

// TestPartialUpgradeFetchesOnlyChangedFiles installs an OS image of ~40 MB
// and ~2k files pushed as zstd:chunked, then upgrades to a v2 in which 2% of
// the files changed inside their layers. The upgrade must fetch at most
// (compressed size of the changed files + the changed layers' TOCs and
// tar-splits) × 1.1 and at most 5% of what a full pull of v2 with gzip
// layers fetches, measured by the registry proxy; the staged deployment
// must hold v2's files, and every layer must say it was pulled partially.
func TestPartialUpgradeFetchesOnlyChangedFiles(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	big := harness.BigImage(t, 40<<20, 2000, 5)
	bigV2, changed := harness.ChangeFilesInPlace(big, 0.02, 6)
	v1 := harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "1", ExtraLayers: big.Layers})
	v2 := harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "2", ExtraLayers: bigV2.Layers})
	reg.Push(t, v1, "os:latest", "zstd:chunked")
	m1 := manifestOf(t, reg, "os", "latest")
	osRef := reg.Ref("os:latest")

	h.ok(h.installArgs(osRef, "--experimental-unified-storage")...)
	for _, l := range h.layersOf(osRef) {
		if !l.Partial || l.Pull != "partial" || l.TOCDigest == "" {
			t.Errorf("v1 layer %s was installed from zstd:chunked but the store says %+v", l.ID, l)
		}
	}

	reg.Push(t, v2, "os:latest", "zstd:chunked")
	m2 := manifestOf(t, reg, "os", "latest")
	bound := computePartialBound(t, reg, m1, m2)
	reg.ResetStats()
	h.ok(h.upgradeArgs()...)
	st := reg.Stats()
	fetched := st.BlobBytes

	// The same v2 with gzip layers, pulled whole into a fresh store.
	reg.Push(t, v2, "osgz:2", "gzip")
	full := newHost(t)
	reg.ResetStats()
	full.ok(full.pullArgs("--bound-images", "skip", reg.Ref("osgz:2"))...)
	gzipBytes := reg.Stats().BlobBytes

	t.Logf("%d of %d files changed (%d distinct new contents, %.2f MB compressed); TOCs and tar-splits of the changed layers: %.2f MB",
		len(changed), len(expectedFiles(t, big)), bound.files, mb(bound.fileBytes), mb(bound.metaBytes))
	t.Logf("upgrade fetched %.2f MB in %d blob requests (%d ranged); bound %.2f MB; full gzip pull of v2: %.2f MB (%.2f%%)",
		mb(fetched), st.BlobGETs, st.RangeGETs, mb(bound.total()*11/10), mb(gzipBytes), 100*float64(fetched)/float64(gzipBytes))
	if len(changed) < 30 || bound.files < int64(len(changed)) {
		t.Fatalf("the fixture is vacuous: %d changed paths, %d new contents", len(changed), bound.files)
	}
	if fetched > bound.total()*11/10 {
		t.Errorf("the upgrade fetched %d bytes, more than (changed files %d + TOC and tar-split %d) × 1.1", fetched, bound.fileBytes, bound.metaBytes)
	}
	if fetched*20 > gzipBytes {
		t.Errorf("the upgrade fetched %d bytes, more than 5%% of a full gzip pull (%d)", fetched, gzipBytes)
	}
	if st.RangeGETs == 0 {
		t.Errorf("the upgrade made no ranged request: it was not a partial pull")
	}

	// Every layer of v2 was pulled partially (or reused from v1's), and the
	// staged deployment holds v2's files.
	layers := h.layersOf(osRef)
	if len(layers) != len(m2.Layers) {
		t.Fatalf("image list shows %d layers for v2, its manifest %d", len(layers), len(m2.Layers))
	}
	for i, l := range layers {
		if !l.Partial {
			t.Errorf("v2 layer %d (%s) is not marked partial: %+v", i, m2.Layers[i].Digest, l)
		}
	}
	staged := h.status().Status.Staged
	if staged == nil {
		t.Fatal("the upgrade staged nothing")
	}
	dep := h.deploymentDir(staged.Bootstore.Deployment)
	want := expectedFiles(t, v2)
	checked := 0
	for p, sum := range want {
		if strings.HasPrefix(p, "/etc/") || strings.HasPrefix(p, "/var/") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dep, p))
		if err != nil {
			t.Errorf("the staged deployment lacks %s: %v", p, err)
			continue
		}
		if got := sha256.Sum256(data); hex.EncodeToString(got[:]) != sum {
			t.Errorf("the staged deployment's %s is not v2's", p)
		}
		checked++
	}
	t.Logf("checked %d files of the staged deployment", checked)
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }

// partialFixture is a v1 and a v2 (2% of files changed in place) pushed as
// zstd:chunked, and v2 pushed as gzip for reference views.
type partialFixture struct {
	reg    *harness.Registry
	v1, v2 harness.Image
	m1, m2 imgspecv1.Manifest
	// ref is a registry host's full pull of v2 (gzip): the view every
	// partial pull of v2 must reproduce.
	ref harness.Tree
}

func newPartialFixture(t *testing.T) *partialFixture {
	t.Helper()
	reg := harness.StartRegistry(t)
	big := harness.BigImage(t, 12<<20, 600, 8)
	bigV2, _ := harness.ChangeFilesInPlace(big, 0.05, 9)
	f := &partialFixture{reg: reg,
		v1: harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "1", ExtraLayers: big.Layers}),
		v2: harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "2", ExtraLayers: bigV2.Layers}),
	}
	reg.Push(t, f.v1, "os:1", "zstd:chunked")
	reg.Push(t, f.v2, "os:2", "zstd:chunked")
	reg.Push(t, f.v2, "osgz:2", "gzip")
	f.m1, f.m2 = manifestOf(t, reg, "os", "1"), manifestOf(t, reg, "os", "2")
	ref := newHost(t)
	ref.ok(ref.pullArgs("--bound-images", "skip", reg.Ref("osgz:2"))...)
	f.ref = imageView(t, ref, reg.Ref("osgz:2"))
	return f
}

// hostWithV1 is a host whose store holds v1, pulled partially.
func (f *partialFixture) hostWithV1(t *testing.T) *host {
	t.Helper()
	h := newHost(t)
	h.ok(h.pullArgs("--bound-images", "skip", f.reg.Ref("os:1"))...)
	return h
}

// storeState is what a failed pull must leave unchanged.
func (h *host) storeState() string {
	h.t.Helper()
	layers, images := h.storeContents()
	var ids []string
	for _, l := range layers {
		ids = append(ids, "layer "+l.ID)
	}
	for _, i := range images {
		ids = append(ids, "image "+i.ID+" "+strings.Join(i.Names, ","))
	}
	slices.Sort(ids)
	return strings.Join(ids, "\n")
}

// assertNothingLeft fails unless the store holds what it held before, no
// orphan layer, no staging directory of a partial pull and no temporary file.
func (h *host) assertNothingLeft(what, before string) {
	h.t.Helper()
	if after := h.storeState(); after != before {
		h.t.Errorf("%s changed the store:\nbefore:\n%s\nafter:\n%s", what, before, after)
	}
	if o := h.orphanLayers(); len(o) != 0 {
		h.t.Errorf("%s left orphan layers %v", what, o)
	}
	if entries, _ := os.ReadDir(filepath.Join(h.storageRoot(), "overlay", "staging")); len(entries) != 0 {
		h.t.Errorf("%s left %d staging directories", what, len(entries))
	}
	h.assertNoTemp(what)
}

// lyingTOC pushes v2 as os:<tag> with the TOC of its first changed layer
// rewritten so that the entry of one file claims digest lie. The TOC, its
// digest annotation and the blob stay consistent with each other: only the
// file's claimed content is false. It returns the forged layer's digest.
func (f *partialFixture) lyingTOC(t *testing.T, tag string, pick func(e tocEntry) bool, lie string) digest.Digest {
	t.Helper()
	have := map[digest.Digest]bool{}
	for _, l := range f.m1.Layers {
		have[l.Digest] = true
	}
	m := f.m2
	m.Layers = slices.Clone(m.Layers)
	for i, desc := range m.Layers {
		if have[desc.Digest] {
			continue
		}
		tocJSON, _, _ := readTOC(t, f.reg, desc)
		var toc map[string]any
		if err := json.Unmarshal(tocJSON, &toc); err != nil {
			t.Fatal(err)
		}
		entries := toc["entries"].([]any)
		k := slices.IndexFunc(entries, func(e any) bool {
			data, _ := json.Marshal(e)
			var te tocEntry
			json.Unmarshal(data, &te)
			return te.Type == "reg" && te.Digest != "" && pick(te)
		})
		if k < 0 {
			continue
		}
		entry := entries[k].(map[string]any)
		t.Logf("layer %s: the TOC says %s has %s; it has %s", desc.Digest, entry["name"], lie, entry["digest"])
		entry["digest"] = lie
		if _, ok := entry["chunkDigest"]; ok {
			entry["chunkDigest"] = lie
		}
		newTOC, err := json.Marshal(toc)
		if err != nil {
			t.Fatal(err)
		}
		blob, err := os.ReadFile(f.reg.BlobPath(desc.Digest))
		if err != nil {
			t.Fatal(err)
		}
		tocOff, _, _ := position(t, desc.Annotations[zstdChunkedTOCPosition])
		tsOff, tsLen, tsULen := position(t, desc.Annotations[zstdChunkedTarSplitPos])
		enc, err := zstd.NewWriter(nil)
		if err != nil {
			t.Fatal(err)
		}
		compressed := enc.EncodeAll(newTOC, nil)
		enc.Close()
		var out bytes.Buffer
		out.Write(blob[:tocOff-8]) // the file frames, up to the TOC's skippable frame
		skippable := func(data []byte) {
			out.Write([]byte{0x50, 0x2a, 0x4d, 0x18})
			binary.Write(&out, binary.LittleEndian, uint32(len(data)))
			out.Write(data)
		}
		newTOCOff := int64(out.Len()) + 8
		skippable(compressed)
		newTSOff := int64(out.Len()) + 8
		skippable(blob[tsOff : tsOff+tsLen])
		footer := make([]byte, 64)
		for j, v := range []int64{newTOCOff, int64(len(compressed)), int64(len(newTOC)), 1, newTSOff, tsLen, tsULen} {
			binary.LittleEndian.PutUint64(footer[8*j:], uint64(v))
		}
		copy(footer[56:], []byte{0x47, 0x4e, 0x55, 0x6c, 0x49, 0x6e, 0x55, 0x78})
		skippable(footer)

		forged := out.Bytes()
		d := uploadBlob(t, f.reg, "os", forged)
		ann := map[string]string{}
		for k, v := range desc.Annotations {
			ann[k] = v
		}
		ann[zstdChunkedTOCDigest] = digest.FromBytes(compressed).String()
		ann[zstdChunkedTOCPosition] = fmt.Sprintf("%d:%d:%d:1", newTOCOff, len(compressed), len(newTOC))
		ann[zstdChunkedTarSplitPos] = fmt.Sprintf("%d:%d:%d", newTSOff, tsLen, tsULen)
		m.Layers[i] = imgspecv1.Descriptor{MediaType: desc.MediaType, Digest: d, Size: int64(len(forged)), Annotations: ann}
		putManifest(t, f.reg, "os", tag, m)
		return d
	}
	t.Fatal("no changed layer has a file to lie about")
	return ""
}

// uploadBlob uploads data to repo in one request and returns its digest.
func uploadBlob(t testing.TB, reg *harness.Registry, repo string, data []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(data)
	resp, err := http.Post("http://"+reg.DirectAddr+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		t.Fatalf("starting an upload to %s: %s", repo, resp.Status)
	}
	if !strings.HasPrefix(loc, "http") {
		loc = "http://" + reg.DirectAddr + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, _ := http.NewRequest(http.MethodPut, loc+sep+"digest="+d.String(), bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("uploading a blob to %s: %s", repo, resp.Status)
	}
	return d
}

// putManifest stores m as repo:tag.
func putManifest(t testing.TB, reg *harness.Registry, repo, tag string, m imgspecv1.Manifest) {
	t.Helper()
	if m.MediaType == "" {
		m.MediaType = imgspecv1.MediaTypeImageManifest
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPut, "http://"+reg.DirectAddr+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(data))
	req.Header.Set("Content-Type", m.MediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("putting manifest %s:%s: %s\n%s", repo, tag, resp.Status, body)
	}
}

// forward sends a blob request to the registry itself with the given
// headers copied, and returns the response.
func forward(reg *harness.Registry, req *http.Request, headers ...string) (*http.Response, error) {
	out, err := http.NewRequestWithContext(req.Context(), req.Method, "http://"+reg.DirectAddr+req.URL.RequestURI(), nil)
	if err != nil {
		return nil, err
	}
	for _, h := range headers {
		if v := req.Header.Get(h); v != "" {
			out.Header.Set(h, v)
		}
	}
	return http.DefaultTransport.RoundTrip(out)
}

func isBlobGET(req *http.Request) bool {
	return req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:")
}

// ignoreRanges makes the proxy answer ranged blob requests as a registry
// without range support does: 200 and the whole blob.
func ignoreRanges(reg *harness.Registry) {
	reg.SetFault(func(w http.ResponseWriter, req *http.Request) bool {
		if !isBlobGET(req) || req.Header.Get("Range") == "" {
			return false
		}
		resp, err := forward(reg, req, "Accept", "Authorization")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return true
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
		return true
	})
}

// truncateRanged makes the proxy cut one ranged blob response short: the
// first one larger than 4 KiB that is the nth ranged request for its blob
// (1: a partial pull's request for the TOC and tar-split; 2: its request for
// the missing files). It declares the full length, sends half and ends the
// response, which closes the connection. It returns how many it cut.
func truncateRanged(reg *harness.Registry, nth int) *atomic.Int64 {
	var cut atomic.Int64
	var mu sync.Mutex
	seen := map[string]int{}
	reg.SetFault(func(w http.ResponseWriter, req *http.Request) bool {
		if !isBlobGET(req) || req.Header.Get("Range") == "" {
			return false
		}
		mu.Lock()
		seen[req.URL.Path]++
		mine := seen[req.URL.Path] == nth
		mu.Unlock()
		if !mine || cut.Load() > 0 {
			return false
		}
		resp, err := forward(reg, req, "Accept", "Authorization", "Range")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return true
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		if resp.StatusCode != http.StatusPartialContent || resp.ContentLength <= 4096 || !cut.CompareAndSwap(0, 1) {
			io.Copy(w, resp.Body)
			return true
		}
		io.CopyN(w, resp.Body, resp.ContentLength/2)
		http.NewResponseController(w).Flush()
		return true
	})
	return &cut
}

// TestPartialPullBadInput: a TOC that lies about a file's digest fails the
// pull, naming the layer, and leaves nothing behind, whether the lie points
// at content to fetch or at content the store already has; a registry that
// ignores Range requests still gives a correct image; a chunk response cut
// short fails clearly without a corrupt layer, and the rerun succeeds.
func TestPartialPullBadInput(t *testing.T) {
	f := newPartialFixture(t)
	v1Content := map[string]bool{}
	for _, l := range f.m1.Layers {
		j, _, _ := readTOC(t, f.reg, l)
		for _, e := range tocEntries(t, j) {
			if e.Type == "reg" && e.Digest != "" {
				v1Content[e.Digest] = true
			}
		}
	}
	var someV1File string
	for d := range v1Content {
		someV1File = d
		break
	}

	for _, tc := range []struct {
		name string
		pick func(e tocEntry) bool
		lie  string
	}{
		// The file must be fetched; its bytes do not match the claim.
		{"lie-fetched", func(e tocEntry) bool { return !v1Content[e.Digest] }, digest.FromString("not the file").String()},
		// The claim names content the store has: reused, the layer would
		// hold another file's bytes unless the DiffID check catches it.
		{"lie-reused", func(e tocEntry) bool { return !v1Content[e.Digest] }, someV1File},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := f.hostWithV1(t)
			forged := f.lyingTOC(t, tc.name, tc.pick, tc.lie)
			before := h.storeState()
			ref := f.reg.Ref("os:" + tc.name)
			h.expectFailure(1, []string{ref, forged.String()}, h.pullArgs("--bound-images", "skip", ref)...)
			h.assertNothingLeft("a pull with a lying TOC", before)
		})
	}

	t.Run("ranges-ignored", func(t *testing.T) {
		h := f.hostWithV1(t)
		ignoreRanges(f.reg)
		defer f.reg.ClearFault()
		f.reg.ResetStats()
		ref := f.reg.Ref("os:2")
		h.ok(h.pullArgs("--bound-images", "skip", ref)...)
		st := f.reg.Stats()
		var v2Size int64
		for _, l := range f.m2.Layers {
			v2Size += l.Size
		}
		t.Logf("with ranges ignored the pull fetched %.2f MB in %d blob requests (%d asked for ranges); v2's layers are %.2f MB",
			mb(st.BlobBytes), st.BlobGETs, st.RangeGETs, mb(v2Size))
		// containers/image reads a 200 answer to a ranged request up to
		// the ranges it asked for: about one blob for the TOC and tar-split
		// and one for the missing files. Correct, and bounded.
		if st.BlobBytes > 3*v2Size {
			t.Errorf("fetched %d bytes, more than three times v2's layers (%d)", st.BlobBytes, v2Size)
		}
		compareViews(t, "v2 pulled from a registry that ignores ranges", f.ref, imageView(t, h, ref), true)
		if o := h.orphanLayers(); len(o) != 0 {
			t.Errorf("orphan layers: %v", o)
		}
	})

	for _, tc := range []struct {
		name string
		nth  int
	}{{"truncated-toc", 1}, {"truncated-files", 2}} {
		t.Run(tc.name, func(t *testing.T) {
			h := f.hostWithV1(t)
			before := h.storeState()
			cut := truncateRanged(f.reg, tc.nth)
			defer f.reg.ClearFault()
			ref := f.reg.Ref("os:2")
			res := h.run(h.pullArgs("--bound-images", "skip", ref)...)
			t.Logf("exit %d after %d truncated responses: %s", res.code, cut.Load(), strings.TrimSpace(res.stderr))
			if cut.Load() == 0 {
				t.Fatal("no ranged response was cut: the fault did not engage")
			}
			if res.code != 0 {
				if !strings.Contains(res.stderr, ref) || !strings.Contains(res.stderr, "blob sha256:") {
					t.Errorf("the error names neither the image nor the layer:\n%s", res.stderr)
				}
				h.assertNothingLeft("a pull cut short", before)
				f.reg.ClearFault()
				h.ok(h.pullArgs("--bound-images", "skip", ref)...)
			}
			compareViews(t, "v2 after a truncated response", f.ref, imageView(t, h, ref), true)
			if o := h.orphanLayers(); len(o) != 0 {
				t.Errorf("orphan layers: %v", o)
			}
		})
	}
}

// TestPartialPullMatchesFullPull: a partial pull of v2 over v1 gives the
// same image as a full gzip pull of v2 (the mtimes of directories and
// symlinks aside: see compareViews), and `image list` marks every layer of
// v2 partial and the gzip pull's layers full.
func TestPartialPullMatchesFullPull(t *testing.T) {
	f := newPartialFixture(t)
	h := f.hostWithV1(t)
	f.reg.ResetStats()
	ref := f.reg.Ref("os:2")
	h.ok(h.pullArgs("--bound-images", "skip", ref)...)
	if st := f.reg.Stats(); st.RangeGETs == 0 {
		t.Errorf("no ranged request: not a partial pull (%+v)", st)
	}
	compareViews(t, "v2 pulled partially over v1", f.ref, imageView(t, h, ref), true)
	for i, l := range h.layersOf(ref) {
		if !l.Partial || l.CompressedDigest != "" || l.TOCDigest != f.m2.Layers[i].Annotations[zstdChunkedTOCDigest] {
			t.Errorf("layer %d: %+v, want partial with TOC %s", i, l, f.m2.Layers[i].Annotations[zstdChunkedTOCDigest])
		}
	}
	// The gzip reference store says its layers came whole.
	gz := newHost(t)
	gz.ok(gz.pullArgs("--bound-images", "skip", f.reg.Ref("osgz:2"))...)
	for _, l := range gz.layersOf(f.reg.Ref("osgz:2")) {
		if l.Partial || l.Pull != "full" || l.CompressedDigest == "" {
			t.Errorf("a gzip layer is not reported as a full pull: %+v", l)
		}
	}
}

// TestPartialPullsOffOnVFS: on a vfs store (the overlay fallback) a
// zstd:chunked image is pulled whole, `image list` says so, and the pull
// says once that partial pulls are off.
func TestPartialPullsOffOnVFS(t *testing.T) {
	// ext4 without d_type: overlayfs refuses it.
	h := newHostAt(t, filepath.Join(harness.LoopFS(t, 256<<20, harness.MkfsExt4NoDType...), "root"))
	reg := harness.StartRegistry(t)
	app1, app2 := harness.AppImage(t, "p1"), harness.AppImage(t, "p2")
	reg.Push(t, app1, "apps/p1:1", "zstd:chunked")
	reg.Push(t, app2, "apps/p2:1", "zstd:chunked")
	first := h.ok(h.pullArgs("--allow-non-bootable", reg.Ref("apps/p1:1"))...)
	if !strings.Contains(first.stderr, "falling back to vfs") {
		t.Fatalf("the store did not fall back to vfs:\n%s", first.stderr)
	}
	reg.ResetStats()
	res := h.ok(h.pullArgs("--allow-non-bootable", reg.Ref("apps/p2:1"))...)
	if n := strings.Count(res.stderr, "partial pulls (zstd:chunked, eStargz) are off"); n != 1 {
		t.Errorf("the pull on a vfs store should say once that partial pulls are off, said it %d times:\n%s", n, res.stderr)
	}
	if st := reg.Stats(); st.RangeGETs != 0 {
		t.Errorf("a vfs store made %d ranged requests", st.RangeGETs)
	}
	for _, l := range h.layersOf(reg.Ref("apps/p2:1")) {
		if l.Partial || l.Pull != "full" {
			t.Errorf("a layer pulled into a vfs store is reported as %+v", l)
		}
	}
}

// TestImagePush publishes an image from the store with each layer format
// and checks what the registry holds and what a host pulls back.
func TestImagePush(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	src := harness.OSImage(t, harness.OSImageOptions{Bootable: true, Version: "p", ExtraLayers: []harness.Layer{
		harness.WithParents(harness.Layer{
			{Path: "/usr/share/p/a", Type: harness.File, Data: bytes.Repeat([]byte("a"), 100000)},
			{Path: "/usr/share/p/link", Type: harness.Symlink, Link: "a"},
		})}})
	reg.Push(t, src, "src:1", "gzip")
	srcRef := reg.Ref("src:1")
	h.ok(h.pullArgs("--bound-images", "skip", srcRef)...)
	want := imageView(t, h, srcRef)
	id := h.list()[0].ID

	push := func(src, dest, format string) result {
		return h.run("image", "push", "--tls-verify=false", "--signature-policy", h.policy, "--compression-format", format, src, dest)
	}
	for _, tc := range []struct{ format, src string }{
		{"gzip", srcRef}, {"zstd", id[:12]}, {"zstd:chunked", srcRef}, {"estargz", id},
	} {
		t.Run(strings.ReplaceAll(tc.format, ":", "-"), func(t *testing.T) {
			tag := "pushed:" + strings.ReplaceAll(tc.format, ":", "-")
			res := push(tc.src, reg.Ref(tag), tc.format)
			if res.code != 0 {
				t.Fatalf("image push:\n%s", res)
			}
			m := manifestOf(t, reg, "pushed", strings.TrimPrefix(tag, "pushed:"))
			if !strings.Contains(res.stdout, "sha256:") {
				t.Errorf("image push should print the pushed digest:\n%s", res.stdout)
			}
			for _, l := range m.Layers {
				var ok bool
				switch tc.format {
				case "gzip":
					ok = l.MediaType == imgspecv1.MediaTypeImageLayerGzip && l.Annotations[zstdChunkedTOCDigest] == "" && l.Annotations[estargzTOCDigest] == ""
				case "zstd":
					ok = l.MediaType == imgspecv1.MediaTypeImageLayerZstd && l.Annotations[zstdChunkedTOCDigest] == ""
				case "zstd:chunked":
					ok = l.MediaType == imgspecv1.MediaTypeImageLayerZstd && l.Annotations[zstdChunkedTOCDigest] != ""
				case "estargz":
					ok = l.MediaType == imgspecv1.MediaTypeImageLayerGzip && l.Annotations[estargzTOCDigest] != ""
				}
				if !ok {
					t.Errorf("%s layer %s: media type %s, annotations %v", tc.format, l.Digest, l.MediaType, l.Annotations)
				}
			}
			// A host pulls it back: the same files (eStargz adds its two
			// metadata files to every layer), partially where it can.
			back := newHost(t)
			back.ok(back.pullArgs("--bound-images", "skip", reg.Ref(tag))...)
			got := imageView(t, back, reg.Ref(tag))
			if tc.format == "estargz" {
				for _, p := range []string{"/stargz.index.json", "/.no.prefetch.landmark"} {
					if _, ok := got[p]; !ok {
						t.Errorf("an eStargz image pulled whole should show %s", p)
					}
					delete(got, p)
				}
			}
			compareViews(t, tc.format+" image pulled back", want, got, tc.format == "zstd:chunked")
			for _, l := range back.layersOf(reg.Ref(tag)) {
				if wantPartial := tc.format == "zstd:chunked"; l.Partial != wantPartial {
					t.Errorf("%s: layer %+v, want partial=%v", tc.format, l, wantPartial)
				}
			}
		})
	}

	// From another transport, and bad input.
	layout := filepath.Join(t.TempDir(), "layout")
	if err := harness.AppImage(t, "fromoci").WriteOCILayout(layout, "v1"); err != nil {
		t.Fatal(err)
	}
	if res := push("oci:"+layout+":v1", reg.Ref("fromoci:1"), "zstd:chunked"); res.code != 0 {
		t.Errorf("push from an OCI layout:\n%s", res)
	} else if m := manifestOf(t, reg, "fromoci", "1"); m.Layers[0].Annotations[zstdChunkedTOCDigest] == "" {
		t.Errorf("the layer pushed from an OCI layout is not zstd:chunked: %v", m.Layers[0].Annotations)
	}
	if res := push(srcRef, reg.Ref("x:1"), "lz4"); res.code != 2 || !strings.Contains(res.stderr, "lz4") {
		t.Errorf("an unknown --compression-format: want exit 2 naming it\n%s", res)
	}
	if res := push(srcRef, "oci:/tmp/nowhere", "gzip"); res.code != 2 {
		t.Errorf("a DEST that is not a registry: want exit 2\n%s", res)
	}
	if res := push("localhost/no-such-image:1", reg.Ref("x:1"), "gzip"); res.code == 0 || !strings.Contains(res.stderr, "no-such-image") {
		t.Errorf("a SRC that exists nowhere: want a failure naming it\n%s", res)
	}
}
