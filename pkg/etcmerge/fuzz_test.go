package etcmerge

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// byteSource is a rand.Source that replays the fuzzer's bytes, so that the
// fuzzer's mutations steer the generator's choices (which names exist,
// their types, modes, owners, xattrs, link targets, which side edits
// what) instead of merely picking another seed. Past the end it yields a
// fixed pattern, which the generator treats like any other choice.
type byteSource struct {
	data []byte
	n    uint64
}

func (s *byteSource) Uint64() uint64 {
	if len(s.data) >= 8 {
		v := binary.LittleEndian.Uint64(s.data)
		s.data = s.data[8:]
		return v
	}
	if len(s.data) > 0 {
		var b [8]byte
		copy(b[:], s.data)
		s.data = nil
		return binary.LittleEndian.Uint64(b[:])
	}
	s.n++
	return s.n * 0x9e3779b97f4a7c15
}

// FuzzMergeDecisions builds the three /etc trees (old default, current, new
// default) from the fuzzer's bytes, merges them for real and checks every
// path and the counts against the oracle, and that nothing outside the
// three trees (a sentinel directory that symlinks point at) changed. The
// seeds are the byte patterns of TestMergeRules' shapes, reached through
// the generator.
func FuzzMergeDecisions(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("needs root (owners, device nodes, trusted.* xattrs)")
	}
	for seed := uint64(0); seed < 16; seed++ {
		var b [64]byte
		r := rand.New(rand.NewPCG(seed, 2))
		for i := range b {
			b[i] = byte(r.Uint64())
		}
		f.Add(b[:])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		sent := filepath.Join(dir, "sentinel")
		stamps := sentinel(t, sent)
		before := stamps()
		g := &gen{r: rand.New(&byteSource{data: data}), sent: sent}
		o := g.tree()
		c, n := g.edit(o), g.edit(o)
		want, wantStats := oracle(o, c, n)
		base := filepath.Join(dir, "merge")
		must(t, os.Mkdir(base, 0o755))
		got, stats := runMerge(t, base, o, c, n)
		diffModels(t, "merge", want, got)
		if stats != wantStats {
			t.Errorf("stats %+v, want %+v", stats, wantStats)
		}
		diffStamps(t, "sentinel", before, stamps())
		if t.Failed() {
			t.Logf("oldDefault:\n%s\ncurrent:\n%s\nnewDefault:\n%s", dump(o), dump(c), dump(n))
		}
	})
}
