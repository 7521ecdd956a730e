package erofs

import (
	"math/bits"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	blkBits  = 12
	blkSize  = 1 << blkBits
	sbOffset = 1024
	sbSize   = 128
	// slotSize is the unit of nids: inodes start at multiples of it.
	slotSize    = 32
	compactSize = 32
	extSize     = 64
	direntSize  = 12
	xattrHdr    = 12 // erofs_xattr_ibody_header
	maxNameLen  = 255
	maxShared   = 255 // h_shared_count is a byte
	nullAddr    = 0xFFFFFFFF

	layoutFlatPlain  = 0
	layoutFlatInline = 2
	layoutChunkBased = 4

	incompatChunkedFile = 0x4
)

// child is one dirent of a directory, "." and ".." included.
type child struct {
	name string
	n    *node
}

// xentry is an xattr as stored: name index, suffix, value.
type xentry struct {
	index  uint8
	suffix string
	value  []byte
}

func (x xentry) size() int { return align(4+len(x.suffix)+len(x.value), 4) }

// node is an inode as laid out.
type node struct {
	in       *Inode
	ino      uint32
	nlink    uint32
	children []child // directories only, sorted
	dirBlks  [][2]int
	payload  []byte // symlink target or file data; directories encode theirs
	dataLen  int
	sparse   bool
	compact  bool
	layout   uint8
	xattrs   []xentry
	inline   []xentry
	shared   []int // indexes into image.shared
	xsize    int   // inline xattr body size, 0 without xattrs
	chunks   int
	chunkFmt uint16
	tail     int // inline tail length
	recSize  int
	offset   int
	blkaddr  uint32
}

func (n *node) nid() uint64 { return uint64(n.offset / slotSize) }

// image is a tree laid out for encoding.
type image struct {
	nodes      []*node
	shared     []xentry
	sharedOff  []int
	buildTime  int64
	buildNsec  uint32
	blocks     uint32
	incompat   uint32
	metaEnd    int
	sharedSize int
}

func align(n, a int) int { return (n + a - 1) / a * a }

// build numbers, sizes and places the tree.
func build(root *Inode) (*image, error) {
	if root == nil || root.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, invalid("/", "the root is not a directory")
	}
	img := &image{}
	byInode := map[*Inode]*node{}
	var walk func(p string, in *Inode, parent *node) (*node, error)
	walk = func(p string, in *Inode, parent *node) (*node, error) {
		if n, ok := byInode[in]; ok {
			if in.Mode&unix.S_IFMT == unix.S_IFDIR {
				return nil, invalid(p, "a directory has a second name")
			}
			n.nlink++
			return n, nil
		}
		n := &node{in: in, nlink: 1, ino: uint32(len(img.nodes) + 1)}
		byInode[in] = n
		img.nodes = append(img.nodes, n)
		if err := n.check(p); err != nil {
			return nil, err
		}
		if in.Mode&unix.S_IFMT != unix.S_IFDIR {
			return n, nil
		}
		if parent == nil {
			parent = n
		}
		n.nlink = 2
		n.children = []child{{".", n}, {"..", parent}}
		ents := append([]Dirent(nil), in.Entries...)
		sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
		for i, e := range ents {
			cp := strings.TrimSuffix(p, "/") + "/" + e.Name
			switch {
			case e.Name == "" || e.Name == "." || e.Name == ".." || strings.ContainsAny(e.Name, "/\x00"):
				return nil, invalid(cp, "bad name %q", e.Name)
			case len(e.Name) > maxNameLen:
				return nil, invalid(cp, "name longer than %d bytes", maxNameLen)
			case i > 0 && ents[i-1].Name == e.Name:
				return nil, invalid(cp, "duplicate name")
			case e.Inode == nil:
				return nil, invalid(cp, "no inode")
			}
			c, err := walk(cp, e.Inode, n)
			if err != nil {
				return nil, err
			}
			if e.Inode.Mode&unix.S_IFMT == unix.S_IFDIR {
				n.nlink++
			}
			n.children = append(n.children, child{e.Name, c})
		}
		sort.Slice(n.children, func(i, j int) bool { return n.children[i].name < n.children[j].name })
		return n, nil
	}
	if _, err := walk("/", root, nil); err != nil {
		return nil, err
	}
	img.shareXattrs()
	img.pickBuildTime()
	for _, n := range img.nodes {
		n.size(img)
	}
	img.place()
	return img, nil
}

// check validates one inode and converts its xattrs and payload.
func (n *node) check(p string) error {
	in := n.in
	switch in.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if in.Data != nil {
			n.payload = in.Data
		} else {
			n.sparse = in.Size > 0
		}
	case unix.S_IFLNK:
		if in.Target == "" || len(in.Target) >= unix.PathMax || strings.IndexByte(in.Target, 0) >= 0 {
			return invalid(p, "bad symlink target of %d bytes", len(in.Target))
		}
		n.payload = []byte(in.Target)
	case unix.S_IFDIR, unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO, unix.S_IFSOCK:
	default:
		return invalid(p, "unknown file type %#o", in.Mode&unix.S_IFMT)
	}
	if in.Mode&^(unix.S_IFMT|0o7777) != 0 {
		return invalid(p, "mode %#o has unknown bits", in.Mode)
	}
	xs := append([]Xattr(nil), in.Xattrs...)
	sort.Slice(xs, func(i, j int) bool { return xs[i].Name < xs[j].Name })
	for i, x := range xs {
		if i > 0 && xs[i-1].Name == x.Name {
			return invalid(p, "xattr %s given twice", x.Name)
		}
		idx, suffix, ok := splitXattrName(x.Name)
		if !ok {
			return invalid(p, "xattr %q has no name prefix EROFS can store", x.Name)
		}
		if len(suffix) > maxNameLen || len(x.Value) > 0xFFFF {
			return invalid(p, "xattr %s is too long", x.Name)
		}
		n.xattrs = append(n.xattrs, xentry{idx, suffix, x.Value})
	}
	return nil
}

func xkey(x xentry) string { return string(rune(x.index)) + x.suffix + "\x00" + string(x.value) }

// shareXattrs moves xattrs carried by more than one inode to the shared
// area, in a fixed order, and leaves the others inline.
func (img *image) shareXattrs() {
	count := map[string]int{}
	for _, n := range img.nodes {
		for _, x := range n.xattrs {
			count[xkey(x)]++
		}
	}
	index := map[string]int{}
	var keys []string
	byKey := map[string]xentry{}
	for _, n := range img.nodes {
		for _, x := range n.xattrs {
			if k := xkey(x); count[k] > 1 {
				if _, ok := byKey[k]; !ok {
					keys = append(keys, k)
					byKey[k] = x
				}
			}
		}
	}
	sort.Strings(keys)
	off := 0
	for i, k := range keys {
		index[k] = i
		img.shared = append(img.shared, byKey[k])
		img.sharedOff = append(img.sharedOff, off)
		off += byKey[k].size()
	}
	img.sharedSize = off
	for _, n := range img.nodes {
		for _, x := range n.xattrs {
			if i, ok := index[xkey(x)]; ok && len(n.shared) < maxShared {
				n.shared = append(n.shared, i)
			} else {
				n.inline = append(n.inline, x)
			}
		}
		if len(n.xattrs) > 0 {
			n.xsize = xattrHdr + 4*len(n.shared)
			for _, x := range n.inline {
				n.xsize += x.size()
			}
		}
	}
}

// pickBuildTime makes the most common mtime the superblock's, so that the
// inodes having it can be compact.
func (img *image) pickBuildTime() {
	type ts struct {
		s  int64
		ns uint32
	}
	count := map[ts]int{}
	best, bestN := ts{}, 0
	for _, n := range img.nodes {
		t := ts{n.in.Mtime, n.in.MtimeNsec}
		count[t]++
		c := count[t]
		if c > bestN || c == bestN && (t.s < best.s || t.s == best.s && t.ns < best.ns) {
			best, bestN = t, c
		}
	}
	img.buildTime, img.buildNsec = best.s, best.ns
}

// dirLayout packs a directory's dirents into blocks and returns its size.
func (n *node) dirLayout() int {
	used, start, size := 0, 0, 0
	for i, c := range n.children {
		need := direntSize + len(c.name)
		if used+need > blkSize {
			n.dirBlks = append(n.dirBlks, [2]int{start, i})
			start, used = i, 0
			size += blkSize
		}
		used += need
	}
	n.dirBlks = append(n.dirBlks, [2]int{start, len(n.children)})
	return size + used
}

// size decides the inode's form and data layout and its record's size.
func (n *node) size(img *image) {
	in := n.in
	fileSize := uint64(len(n.payload))
	switch {
	case in.Mode&unix.S_IFMT == unix.S_IFDIR:
		n.dataLen = n.dirLayout()
		fileSize = uint64(n.dataLen)
	case n.sparse:
		fileSize = in.Size
	case in.Mode&unix.S_IFMT == unix.S_IFREG || in.Mode&unix.S_IFMT == unix.S_IFLNK:
		n.dataLen = len(n.payload)
	default:
		fileSize = 0
	}
	n.compact = in.UID <= 0xFFFF && in.GID <= 0xFFFF && n.nlink <= 0xFFFF && fileSize <= 0xFFFFFFFF &&
		in.Mtime == img.buildTime && in.MtimeNsec == img.buildNsec
	core := extSize
	if n.compact {
		core = compactSize
	}
	n.recSize = core + n.xsize
	n.layout = layoutFlatPlain
	switch {
	case n.sparse:
		n.layout = layoutChunkBased
		img.incompat |= incompatChunkedFile
		b := 0
		if in.Size > 1 {
			b = bits.Len64(in.Size-1) - blkBits
		}
		b = max(0, min(b, 31))
		n.chunkFmt = uint16(b)
		chunk := uint64(blkSize) << b
		n.chunks = int((in.Size + chunk - 1) / chunk)
		n.recSize += 4 * n.chunks
	case n.dataLen%blkSize != 0 && n.recSize+n.dataLen%blkSize <= blkSize:
		n.layout = layoutFlatInline
		n.tail = n.dataLen % blkSize
		n.recSize += n.tail
	}
}

// fullBlocks is the number of data blocks outside the metadata area.
func (n *node) fullBlocks() int {
	if n.layout == layoutFlatInline {
		return n.dataLen / blkSize
	}
	if n.layout == layoutFlatPlain {
		return (n.dataLen + blkSize - 1) / blkSize
	}
	return 0
}

// place gives every record its offset and every data run its block.
func (img *image) place() {
	pos := sbOffset + sbSize
	for _, n := range img.nodes {
		pos = align(pos, slotSize)
		inBlk := pos % blkSize
		core := extSize
		if n.compact {
			core = compactSize
		}
		if n.recSize <= blkSize && inBlk+n.recSize > blkSize || inBlk+core > blkSize {
			pos = align(pos, blkSize)
		}
		n.offset = pos
		pos += n.recSize
	}
	pos = align(pos, 4)
	img.metaEnd = pos
	pos += img.sharedSize
	next := uint32(align(pos, blkSize) / blkSize)
	for _, n := range img.nodes {
		if b := n.fullBlocks(); b > 0 {
			n.blkaddr = next
			next += uint32(b)
		}
	}
	img.blocks = next
}
