package erofs

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

const magic = 0xE0F5E1E2

var le = binary.LittleEndian

// encode renders the laid-out image.
func (img *image) encode() []byte {
	out := make([]byte, int(img.blocks)*blkSize)
	root := img.nodes[0]
	sb := out[sbOffset : sbOffset+sbSize]
	le.PutUint32(sb[0:], magic)
	// checksum (4) and feature_compat (8) stay 0: no superblock checksum.
	sb[12] = blkBits
	le.PutUint16(sb[14:], uint16(root.nid()))
	le.PutUint64(sb[16:], uint64(len(img.nodes)))
	le.PutUint64(sb[24:], uint64(img.buildTime))
	le.PutUint32(sb[32:], img.buildNsec)
	le.PutUint32(sb[36:], img.blocks)
	// meta_blkaddr (40) and xattr_blkaddr (44) are block 0.
	le.PutUint32(sb[80:], img.incompat)

	for i, x := range img.shared {
		putXattr(out[img.metaEnd+img.sharedOff[i]:], x)
	}
	for _, n := range img.nodes {
		img.encodeNode(out, n)
	}
	return out
}

func putXattr(b []byte, x xentry) {
	b[0] = uint8(len(x.suffix))
	b[1] = x.index
	le.PutUint16(b[2:], uint16(len(x.value)))
	copy(b[4:], x.suffix)
	copy(b[4+len(x.suffix):], x.value)
}

func (img *image) encodeNode(out []byte, n *node) {
	in := n.in
	b := out[n.offset : n.offset+n.recSize]
	var iu uint32
	switch {
	case n.layout == layoutChunkBased:
		iu = uint32(n.chunkFmt)
	case in.Mode&unix.S_IFMT == unix.S_IFCHR || in.Mode&unix.S_IFMT == unix.S_IFBLK:
		iu = encodeDev(in.Rdev)
	default:
		iu = n.blkaddr
	}
	icount := 0
	if n.xsize > 0 {
		icount = 1 + (n.xsize-xattrHdr)/4
	}
	size := uint64(n.dataLen)
	if n.layout == layoutChunkBased {
		size = in.Size
	}
	core := extSize
	if n.compact {
		core = compactSize
		le.PutUint16(b[0:], uint16(n.layout)<<1)
		le.PutUint16(b[2:], uint16(icount))
		le.PutUint16(b[4:], uint16(in.Mode))
		le.PutUint16(b[6:], uint16(n.nlink))
		le.PutUint32(b[8:], uint32(size))
		// i_mtime (12) is 0: the superblock's build time.
		le.PutUint32(b[16:], iu)
		le.PutUint32(b[20:], n.ino)
		le.PutUint16(b[24:], uint16(in.UID))
		le.PutUint16(b[26:], uint16(in.GID))
	} else {
		le.PutUint16(b[0:], uint16(n.layout)<<1|1)
		le.PutUint16(b[2:], uint16(icount))
		le.PutUint16(b[4:], uint16(in.Mode))
		le.PutUint64(b[8:], size)
		le.PutUint32(b[16:], iu)
		le.PutUint32(b[20:], n.ino)
		le.PutUint32(b[24:], in.UID)
		le.PutUint32(b[28:], in.GID)
		le.PutUint64(b[32:], uint64(in.Mtime))
		le.PutUint32(b[40:], in.MtimeNsec)
		le.PutUint32(b[44:], n.nlink)
	}
	p := core
	if n.xsize > 0 {
		// h_name_filter 0: no filter (the feature is off anyway).
		b[p+4] = uint8(len(n.shared))
		p += xattrHdr
		for _, i := range n.shared {
			le.PutUint32(b[p:], uint32((img.metaEnd+img.sharedOff[i])/4))
			p += 4
		}
		for _, x := range n.inline {
			putXattr(b[p:], x)
			p += x.size()
		}
	}
	data := n.payload
	if in.Mode&unix.S_IFMT == unix.S_IFDIR {
		data = n.dirData()
	}
	switch n.layout {
	case layoutChunkBased:
		for i := 0; i < n.chunks; i++ {
			le.PutUint32(b[p+4*i:], nullAddr)
		}
	case layoutFlatInline:
		full := n.fullBlocks() * blkSize
		copy(b[p:], data[full:])
		copy(out[int(n.blkaddr)*blkSize:], data[:full])
	default:
		if len(data) > 0 {
			copy(out[int(n.blkaddr)*blkSize:], data)
		}
	}
}

// dirData encodes a directory's blocks: dirents, then their names; the
// last block is as long as it is used.
func (n *node) dirData() []byte {
	out := make([]byte, n.dataLen)
	for bi, r := range n.dirBlks {
		blk := out[bi*blkSize:]
		nameOff := direntSize * (r[1] - r[0])
		for i, c := range n.children[r[0]:r[1]] {
			d := blk[direntSize*i:]
			le.PutUint64(d[0:], c.n.nid())
			le.PutUint16(d[8:], uint16(nameOff))
			d[10] = fileType(c.n.in.Mode)
			copy(blk[nameOff:], c.name)
			nameOff += len(c.name)
		}
	}
	return out
}
