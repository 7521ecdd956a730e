package etcmerge

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMergeRandom merges random trees, made from a seed, and checks every
// path of the result and the stats against the oracle, which applies the
// rules to the models independently of Merge. newDefault and current are
// independent random edits of oldDefault over the same few names, so that
// every combination of rules, types and metadata meets at some path.
func TestMergeRandom(t *testing.T) {
	requireRoot(t)
	seeds := 300
	if testing.Short() {
		seeds = 30
	}
	dir := t.TempDir()
	sent := filepath.Join(dir, "sentinel")
	sentStamps := sentinel(t, sent)
	sentBefore := sentStamps()
	var total Stats
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			g := &gen{r: rand.New(rand.NewPCG(uint64(seed), 2)), sent: sent}
			o := g.tree()
			c, n := g.edit(o), g.edit(o)
			want, wantStats := oracle(o, c, n)
			base := filepath.Join(dir, fmt.Sprint(seed))
			must(t, os.Mkdir(base, 0o755))
			got, stats := runMerge(t, base, o, c, n)
			diffModels(t, "merge", want, got)
			if stats != wantStats {
				t.Errorf("stats %+v, want %+v", stats, wantStats)
			}
			if t.Failed() {
				t.Logf("oldDefault:\n%s\ncurrent:\n%s\nnewDefault:\n%s", dump(o), dump(c), dump(n))
			}
			total.AdminKept += stats.AdminKept
			total.Added += stats.Added
			total.Deleted += stats.Deleted
			total.DefaultsTaken += stats.DefaultsTaken
			must(t, os.RemoveAll(base))
		})
	}
	diffStamps(t, "sentinel", sentBefore, sentStamps())
	t.Logf("over %d seeds: %v", seeds, total)
}

func dump(m model) string {
	var b strings.Builder
	for _, p := range sortedPaths(m) {
		fmt.Fprintf(&b, "  %s: %v\n", p, m[p])
	}
	return b.String()
}

// gen makes random trees over the names a, b, c, at most maxDepth deep.
type gen struct {
	r    *rand.Rand
	sent string
}

const maxDepth = 3

var genNames = []string{"a", "b", "c"}

func (g *gen) pick(xs ...string) string { return xs[g.r.IntN(len(xs))] }

func (g *gen) tree() model {
	m := model{".": g.dir()}
	g.fill(m, ".", 65)
	return m
}

// fill adds entries below the directory p, each name with probability
// pct%.
func (g *gen) fill(m model, p string, pct int) {
	if depth(p) >= maxDepth {
		return
	}
	for _, name := range genNames {
		child := path.Join(p, name)
		if _, ok := m[child]; ok || g.r.IntN(100) >= pct {
			continue
		}
		m[child] = g.node(depth(child) < maxDepth)
		if m[child].typ == unix.S_IFDIR {
			g.fill(m, child, 65)
		}
	}
}

// node makes a random entry; directories only if dirOK.
func (g *gen) node(dirOK bool) node {
	x := g.r.IntN(100)
	if !dirOK {
		x = 40 + g.r.IntN(60)
	}
	var n node
	switch {
	case x < 40:
		return g.dir()
	case x < 75:
		n = node{typ: unix.S_IFREG, data: g.pick("x", "y", ""), perm: g.perm(unix.S_IFREG)}
	case x < 88:
		n = node{typ: unix.S_IFLNK, perm: 0o777, data: g.target()}
	case x < 94:
		n = node{typ: unix.S_IFIFO, perm: g.perm(unix.S_IFIFO)}
	default:
		n = node{typ: unix.S_IFCHR, perm: g.perm(unix.S_IFCHR), rdev: g.rdev()}
	}
	n.uid, n.gid = g.id(), g.id()
	n.xattrs = g.xattrs(n.typ)
	return n
}

func (g *gen) dir() node {
	n := node{typ: unix.S_IFDIR, perm: g.perm(unix.S_IFDIR), uid: g.id(), gid: g.id()}
	n.xattrs = g.xattrs(n.typ)
	return n
}

func (g *gen) perm(typ uint32) uint32 {
	switch typ {
	case unix.S_IFDIR:
		return []uint32{0o755, 0o755, 0o700, 0o1777}[g.r.IntN(4)]
	case unix.S_IFREG:
		return []uint32{0o644, 0o644, 0o600, 0o755, 0o4755}[g.r.IntN(5)]
	}
	return []uint32{0o644, 0o600}[g.r.IntN(2)]
}

func (g *gen) id() uint32 { return []uint32{0, 0, 1000}[g.r.IntN(3)] }

func (g *gen) rdev() uint64 { return unix.Mkdev(1, []uint32{3, 5}[g.r.IntN(2)]) }

// target points inside the tree, outside it (to the sentinel, which lies
// two levels above the top-level entries) or nowhere.
func (g *gen) target() string {
	return g.pick("x", "a", "a/b", "../b", "/etc/passwd", "../../..", "../../sentinel",
		"../../../sentinel/b", g.sent, filepath.Join(g.sent, "b"))
}

// xattrs are user.* on files and directories, trusted.* on the rest (the
// kernel allows user.* on nothing else).
func (g *gen) xattrs(typ uint32) string {
	if typ == unix.S_IFREG || typ == unix.S_IFDIR {
		return g.pick("", "", "user.t=1", "user.t=2", "user.t=1 user.u=1")
	}
	return g.pick("", "", "trusted.t=1")
}

// edit makes a random edit of m: each entry kept, deleted, changed in one
// attribute or replaced, and new entries added.
func (g *gen) edit(m model) model {
	out := maps(m)
	for _, p := range sortedPaths(m) {
		if _, ok := out[p]; !ok {
			continue // deleted with a parent
		}
		x := g.r.IntN(100)
		switch {
		case x < 55:
		case x < 80 || p == ".":
			out[p] = g.tweak(out[p])
		case x < 90:
			removeTree(out, p)
		default:
			removeTree(out, p)
			out[p] = g.node(depth(p) < maxDepth)
			if out[p].typ == unix.S_IFDIR {
				g.fill(out, p, 50)
			}
		}
	}
	for _, p := range sortedPaths(out) {
		if out[p].typ == unix.S_IFDIR {
			g.fill(out, p, 15)
		}
	}
	return out
}

// tweak changes one attribute of n.
func (g *gen) tweak(n node) node {
	switch g.r.IntN(4) {
	case 0:
		if n.typ == unix.S_IFLNK {
			n.uid = g.id() // a symlink's mode is always 0777
		} else {
			n.perm = g.perm(n.typ)
		}
	case 1:
		n.uid, n.gid = g.id(), g.id()
	case 2:
		n.xattrs = g.xattrs(n.typ)
	default:
		switch n.typ {
		case unix.S_IFREG:
			n.data = g.pick("x", "y", "z", "")
		case unix.S_IFLNK:
			n.data = g.target()
		case unix.S_IFCHR:
			n.rdev = g.rdev()
		default:
			n.perm = g.perm(n.typ)
		}
	}
	return n
}

func maps(m model) model {
	out := make(model, len(m))
	for p, n := range m {
		out[p] = n
	}
	return out
}

func removeTree(m model, p string) {
	for q := range m {
		if q == p || strings.HasPrefix(q, p+"/") {
			delete(m, q)
		}
	}
}

// TestOracleCoverage checks that the random trees reach every rule and the
// structural cases, so that TestMergeRandom checks something.
func TestOracleCoverage(t *testing.T) {
	seen := map[string]int{}
	for seed := range 300 {
		g := &gen{r: rand.New(rand.NewPCG(uint64(seed), 2)), sent: "/s"}
		o := g.tree()
		c, n := g.edit(o), g.edit(o)
		res, _ := oracle(o, c, n)
		for _, p := range sortedPaths(o, c, n) {
			on, ook := o[p]
			cn, cok := c[p]
			nn, nok := n[p]
			rn, rok := res[p]
			isDir := func(x node, ok bool) bool { return ok && x.typ == unix.S_IFDIR }
			switch {
			case cok && ook && on != cn && nok && !isDir(cn, true) && isDir(nn, nok):
				seen["admin file over new dir"]++
			case cok && ook && on != cn && nok && isDir(cn, true) && !isDir(nn, nok):
				seen["admin dir over new file"]++
			case cok && ook && on != cn && nok && nn != on:
				seen["admin change vs new change"]++
			case cok && !ook && nok:
				seen["both added"]++
			case ook && !cok && nok && on != nn:
				seen["admin deleted, new changed"]++
			case cok && ook && on == cn && isDir(cn, cok) && !isDir(nn, nok) && isDir(rn, rok):
				seen["kept for an admin's change below"]++
			case cok && ook && on == cn && nok && nn != cn:
				seen["new default taken"]++
			case !ook && !cok && nok && rok:
				seen["new default appears"]++
			case !ook && !cok && nok && !rok:
				seen["new default dropped"]++
			}
			if cok && (!ook || on != cn) && cn.typ == unix.S_IFLNK && strings.HasPrefix(cn.data, "../../") {
				seen["admin symlink outside"]++
			}
		}
	}
	keys := []string{
		"admin file over new dir", "admin dir over new file", "admin change vs new change", "both added",
		"admin deleted, new changed", "kept for an admin's change below", "new default taken",
		"new default appears", "new default dropped", "admin symlink outside",
	}
	for _, k := range keys {
		if seen[k] < 5 {
			t.Errorf("%s: %d times", k, seen[k])
		}
	}
	slices.Sort(keys)
	t.Log(seen)
}
