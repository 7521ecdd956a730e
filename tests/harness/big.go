package harness

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"path"
	"slices"
	"testing"
)

// BigImage returns a benchmark image of about files regular files totalling exactly
// sizeBytes of poorly compressible data (about 3/4 random 4 KiB blocks, 1/4 repeats) in a
// realistic /usr/lib/bench/pkgNNN/{bin,lib,share} tree, split into 5 layers of similar
// size. It is deterministic by seed. File bodies are generated while the layer is written
// (Entry.Content), so the image itself holds only metadata. Combine it with an OS via
// OSImageOptions{ExtraLayers: BigImage(...).Layers}.
func BigImage(t testing.TB, sizeBytes int64, files int, seed int64) Image {
	t.Helper()
	if files < 1 || sizeBytes < 0 {
		t.Fatalf("BigImage: need files >= 1 and sizeBytes >= 0, got %d, %d", files, sizeBytes)
	}
	r := rand.New(rand.NewPCG(uint64(seed), 0xb0075704e))
	// Log-normal sizes: many small files, a few large ones, like a real /usr.
	weights := make([]float64, files)
	var total float64
	for i := range weights {
		weights[i] = math.Exp(r.NormFloat64() * 1.5)
		total += weights[i]
	}
	sizes := make([]int64, files)
	var assigned int64
	for i := range sizes {
		sizes[i] = int64(float64(sizeBytes) * weights[i] / total)
		assigned += sizes[i]
	}
	sizes[r.IntN(files)] += sizeBytes - assigned // exact total
	const nLayers = 5
	perPkg := max(1, int(math.Sqrt(float64(files))))
	subdirs := []string{"bin", "lib", "share/data", "share/doc", "lib/plugins"}
	exts := []string{"so", "bin", "dat", "pak", "gz"}
	layers := make([]Layer, 0, nLayers)
	var cur Layer
	var done int64
	for i := 0; i < files; i++ {
		p := fmt.Sprintf("/usr/lib/bench/pkg%03d/%s/f%05d.%s",
			i/perPkg, subdirs[i%len(subdirs)], i, exts[(i/3)%len(exts)])
		cur = append(cur, Entry{Path: p, Type: File, Mode: []int64{0o644, 0o755}[i%7/6],
			Size: sizes[i], Content: dataSource(seed, uint64(i), sizes[i])})
		done += sizes[i]
		// Close the layer at each 1/nLayers of the bytes, keeping files-left >= layers-left.
		left := nLayers - len(layers) - 1
		if left > 0 && (done*nLayers >= sizeBytes*int64(len(layers)+1) || files-i-1 <= left) {
			layers = append(layers, WithParents(cur))
			cur = nil
		}
	}
	if len(cur) > 0 {
		layers = append(layers, WithParents(cur))
	}
	return Image{Layers: layers, Labels: map[string]string{"bootstore.harness.big": fmt.Sprint(seed)},
		Cmd: []string{"/usr/bin/true"}}
}

// ChangeFiles returns img plus one top layer that rewrites round(fraction*N) of its N
// regular files (chosen deterministically by seed) with new content of the same size and
// mode; img itself is not modified.
func ChangeFiles(img Image, fraction float64, seed int64) Image {
	var order []string
	last := map[string]Entry{}
	for _, l := range img.Layers {
		for _, e := range l {
			p := cleanPath(e.Path)
			if e.Type != File {
				delete(last, p)
				continue
			}
			if _, ok := last[p]; !ok {
				order = append(order, p)
			}
			last[p] = e
		}
	}
	var paths []string
	for _, p := range order {
		if _, ok := last[p]; ok {
			paths = append(paths, p)
		}
	}
	n := int(math.Round(fraction * float64(len(paths))))
	r := rand.New(rand.NewPCG(uint64(seed), 0xc4a9e))
	pick := make([]bool, len(paths))
	for _, i := range r.Perm(len(paths))[:max(0, min(n, len(paths)))] {
		pick[i] = true
	}
	var top Layer
	for i, p := range paths {
		if !pick[i] {
			continue
		}
		e := last[p]
		size := e.Size
		if e.Content == nil {
			size = int64(len(e.Data))
		}
		top = append(top, Entry{Path: "/" + p, Type: File, Mode: e.Mode, UID: e.UID, GID: e.GID,
			Xattrs: e.Xattrs, Size: size, Content: dataSource(seed^0x5eed, uint64(i), size)})
	}
	out := img
	out.Layers = append(append([]Layer(nil), img.Layers...), WithParents(top))
	return out
}

// dataSource returns a generator of size deterministic, poorly compressible bytes.
func dataSource(seed int64, index uint64, size int64) func() io.Reader {
	return func() io.Reader {
		var key [32]byte
		binary.LittleEndian.PutUint64(key[0:], uint64(seed))
		binary.LittleEndian.PutUint64(key[8:], index)
		return &dataReader{rng: rand.NewChaCha8(key), left: size}
	}
}

// dataReader yields 4 KiB blocks: fresh random with probability 3/4, otherwise a repeat
// of the previous block (so gzip/zstd find something, but not much).
type dataReader struct {
	rng   *rand.ChaCha8
	block [4096]byte
	off   int // read offset into block; len(block) means "need a new block"
	left  int64
	init  bool
}

func (d *dataReader) Read(p []byte) (int, error) {
	if d.left <= 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && d.left > 0 {
		if !d.init || d.off == len(d.block) {
			if !d.init || d.rng.Uint64()%4 != 0 {
				_, _ = d.rng.Read(d.block[:])
			}
			d.init, d.off = true, 0
		}
		c := copy(p[n:], d.block[d.off:])
		if int64(c) > d.left {
			c = int(d.left)
		}
		d.off += c
		d.left -= int64(c)
		n += c
	}
	return n, nil
}

// ChangeFilesInPlace rewrites round(fraction*N) of img's N regular files (as
// ChangeFiles picks them) inside the layers that hold them, instead
// of adding a layer on top: the way a rebuilt OS image changes. It returns
// the new image and the changed paths.
func ChangeFilesInPlace(img Image, fraction float64, seed int64) (Image, map[string]bool) {
	changed := ChangeFiles(img, fraction, seed)
	repl := map[string]Entry{}
	for _, e := range changed.Layers[len(changed.Layers)-1] {
		if e.Type == File {
			repl[path.Clean("/"+e.Path)] = e
		}
	}
	out := img
	out.Layers = make([]Layer, len(img.Layers))
	paths := map[string]bool{}
	for i, l := range img.Layers {
		nl := slices.Clone(l)
		for j, e := range nl {
			p := path.Clean("/" + e.Path)
			if r, ok := repl[p]; ok && e.Type == File {
				r.Path, r.ModTime = e.Path, e.ModTime
				nl[j] = r
				paths[p] = true
			}
		}
		out.Layers[i] = nl
	}
	return out, paths
}
