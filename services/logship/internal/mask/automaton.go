package mask

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
	"sort"
)

// shallowDepth: the states of fewer pattern bytes have a dense row of the
// transition function; the deeper ones are stored compactly (a label and a
// failure link). wrapDepth: a line break is skipped (the state stays) once
// that many pattern bytes are matched. They are equal, so that every state
// that skips breaks is a compact one.
const (
	shallowDepth = 4
	wrapDepth    = shallowDepth
)

// Node flags.
const (
	fKid    uint8 = 1 << iota // node+1 is the node's first child
	fBranch                   // the node has more children, in extra
	fMatch                    // a pattern ends here (cover > 0)
	fAnchor                   // a known-format anchor ends here
	fWrap                     // the node is a prefix of a wrap-tolerant pattern
)

// nodeVal maps a node to a value; slices of them are sorted by node.
type nodeVal struct{ node, val int32 }

// automaton is an Aho–Corasick automaton over a set of patterns, in memory
// proportional to their total length.
//
// Nodes are numbered so that the states of depth < shallowDepth come first
// (0 is the root): their full transition function is a dense table over
// byte classes. The deeper nodes are numbered in depth-first preorder of the
// trie built from the sorted patterns, so a node's first child is the next
// node: a deep node costs a label byte, a flag byte, a failure link and its
// depth (10 bytes). A transition from a deep node follows the child edge if
// the byte matches, else the failure link, as in the textbook algorithm
// (amortized constant time per byte).
type automaton struct {
	nShallow int32
	stride   int32
	class    [256]int32
	dense    []int32 // nShallow rows of stride targets

	label []byte  // the byte on the edge into the node
	flags []uint8 // fKid, fBranch, fMatch, fAnchor
	fail  []int32
	depth []int32
	extra map[uint64]int32 // (node<<8 | byte) → child, for children but the first

	covers  []nodeVal // node → length of the longest pattern ending there
	anchors []nodeVal // node → anchor index + 1
	maxLen  int
	// minLen is the length of the shortest pattern or anchor.
	minLen int
}

func isBreak(c byte) bool { return c == '\n' || c == '\r' }

// step returns the state after reading c in state s: the child, or the
// failure transition. (Line breaks, in no pattern, lead to the root; the
// callers skip them first where they should, see skipBreak.)
func (a *automaton) step(s int32, c byte) int32 {
	if s < a.nShallow {
		return a.dense[s*a.stride+a.class[c]]
	}
	return a.deep(s, c)
}

// skipBreak reports whether the line break c is skipped in state s: when at
// least wrapDepth bytes of a wrap-tolerant pattern are matched, the match
// can go on, and not with c.
func (a *automaton) skipBreak(s int32, c byte) bool {
	if s < a.nShallow {
		return false
	}
	f := a.flags[s]
	if f&fWrap == 0 || f&(fKid|fBranch) == 0 {
		return false
	}
	if f&fKid != 0 && a.label[s+1] == c {
		return false
	}
	if f&fBranch != 0 {
		if _, ok := a.extra[uint64(s)<<8|uint64(c)]; ok {
			return false
		}
	}
	return true
}

func (a *automaton) deep(s int32, c byte) int32 {
	for {
		f := a.flags[s]
		if f&fKid != 0 && a.label[s+1] == c {
			return s + 1
		}
		if f&fBranch != 0 {
			if t, ok := a.extra[uint64(s)<<8|uint64(c)]; ok {
				return t
			}
		}
		s = a.fail[s]
		if s < a.nShallow {
			return a.dense[s*a.stride+a.class[c]]
		}
	}
}

func lookup(vals []nodeVal, s int32) int32 {
	i := sort.Search(len(vals), func(i int) bool { return vals[i].node >= s })
	if i < len(vals) && vals[i].node == s {
		return vals[i].val
	}
	return 0
}

// cover returns the length of the longest pattern ending in state s.
func (a *automaton) cover(s int32) int32 { return lookup(a.covers, s) }

// anchor returns the index of the anchor ending in state s, or -1.
func (a *automaton) anchor(s int32) int { return int(lookup(a.anchors, s)) - 1 }

// bytes returns the memory the automaton holds.
func (a *automaton) bytes() int {
	return 4*len(a.dense) + len(a.label) + len(a.flags) + 4*len(a.fail) + 4*len(a.depth) +
		8*len(a.covers) + 8*len(a.anchors) + 48*len(a.extra) + 1024
}

type buildEntry struct {
	b      []byte
	wrap   bool
	match  bool
	anchor int32 // anchor index + 1, or 0
}

// buildAutomaton compiles patterns and anchors (none empty).
func buildAutomaton(pats []pattern, anchors [][]byte) *automaton {
	entries := make([]buildEntry, 0, len(pats)+len(anchors))
	for _, p := range pats {
		entries = append(entries, buildEntry{b: p.b, match: true, wrap: p.wrap})
	}
	for i, p := range anchors {
		entries = append(entries, buildEntry{b: p, anchor: int32(i + 1)})
	}
	slices.SortFunc(entries, func(x, y buildEntry) int { return bytes.Compare(x.b, y.b) })

	a := &automaton{extra: make(map[uint64]int32)}
	// Pass 1: count the nodes.
	nShallow, total := int64(1), int64(1)
	var prev []byte
	a.minLen = math.MaxInt
	for _, e := range entries {
		l := lcp(prev, e.b)
		nShallow += int64(max(0, min(len(e.b), shallowDepth-1)-l))
		total += int64(len(e.b) - l)
		a.maxLen = max(a.maxLen, len(e.b))
		a.minLen = min(a.minLen, len(e.b))
		prev = e.b
	}
	if total > math.MaxInt32 {
		panic("mask: too many pattern bytes for one automaton")
	}
	var stride int32 = 1
	for _, e := range entries {
		for _, c := range e.b {
			if a.class[c] == 0 {
				a.class[c] = stride
				stride++
			}
		}
	}
	n := int32(total)
	a.nShallow, a.stride = int32(nShallow), stride
	a.label = make([]byte, n)
	a.flags = make([]uint8, n)
	a.fail = make([]int32, n)
	a.depth = make([]int32, n)
	a.dense = make([]int32, int(a.nShallow)*int(stride))
	parent := make([]int32, n)
	own := make([]int32, n) // anchor index + 1 ending at the node
	type edge struct {
		parent, child int32
		c             byte
	}
	var shallowEdges [shallowDepth][]edge

	// Pass 2: the trie.
	path := make([]int32, a.maxLen+1)
	nextS, nextD := int32(1), a.nShallow
	prev = nil
	for _, e := range entries {
		l := lcp(prev, e.b)
		for d := l + 1; d <= len(e.b); d++ {
			var id int32
			if d < shallowDepth {
				id, nextS = nextS, nextS+1
			} else {
				id, nextD = nextD, nextD+1
			}
			p, c := path[d-1], e.b[d-1]
			a.label[id], a.depth[id], parent[id] = c, int32(d), p
			switch {
			case p < a.nShallow:
				shallowEdges[a.depth[p]] = append(shallowEdges[a.depth[p]], edge{p, id, c})
			case a.flags[p]&fKid == 0:
				if id != p+1 {
					panic("mask: trie order")
				}
				a.flags[p] |= fKid
			default:
				a.extra[uint64(p)<<8|uint64(c)] = id
				a.flags[p] |= fBranch
			}
			path[d] = id
		}
		t := path[len(e.b)]
		if e.wrap {
			for _, id := range path[1 : len(e.b)+1] {
				a.flags[id] |= fWrap
			}
		}
		if e.match {
			a.flags[t] |= fMatch
		}
		if e.anchor != 0 {
			own[t] = e.anchor
		}
		prev = e.b
	}

	// Nodes by depth (counting sort): failure links in breadth-first order.
	start := make([]int32, a.maxLen+2)
	for _, d := range a.depth {
		start[d+1]++
	}
	for d := 1; d < len(start); d++ {
		start[d] += start[d-1]
	}
	order := make([]int32, n)
	fill := slices.Clone(start)
	for id, d := range a.depth {
		order[fill[d]] = int32(id)
		fill[d]++
	}
	cover := make([]int32, n)
	for _, e := range shallowEdges[0] {
		a.dense[a.class[e.c]] = e.child
	}
	for d := 1; d <= a.maxLen; d++ {
		nodes := order[start[d]:start[d+1]]
		for _, t := range nodes {
			if p := parent[t]; p != 0 {
				a.fail[t] = a.step(a.fail[p], a.label[t])
			}
			f := a.fail[t]
			if a.flags[t]&fMatch != 0 {
				cover[t] = int32(d)
			} else {
				cover[t] = cover[f]
			}
			if own[t] == 0 {
				own[t] = own[f]
			}
			if t < a.nShallow {
				copy(a.dense[t*stride:][:stride], a.dense[f*stride:][:stride])
			}
		}
		if d < shallowDepth {
			for _, e := range shallowEdges[d] {
				a.dense[e.parent*stride+a.class[e.c]] = e.child
			}
		}
	}
	for id := range n {
		if cover[id] > 0 {
			a.flags[id] |= fMatch
			a.covers = append(a.covers, nodeVal{id, cover[id]})
		}
		if own[id] > 0 {
			a.flags[id] |= fAnchor
			a.anchors = append(a.anchors, nodeVal{id, own[id]})
		}
	}
	if a.minLen == math.MaxInt {
		a.minLen = 0
	}
	return a
}

func lcp(a, b []byte) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// filter is a bitmap of hashed 4-byte strings. With stride 1 they are the
// first 4 bytes of every pattern and anchor: a position whose next 4 bytes
// miss it cannot begin one. With stride 2 they are also the 4 bytes after
// the first (for a 4-byte anchor, its last 3 and each byte that can follow
// it): probing every other position finds every pattern (of 5 bytes or
// more) within one byte of its start. It has 64 bits per key (at least 8
// KiB, at most 1 MiB), so that ordinary text hits it rarely.
type filter struct {
	bits   []uint64
	shift  uint32
	stride int
}

const filterMul = 0x9E3779B1

func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

func newFilter(keys [][]byte, stride int) *filter {
	if stride < 1 {
		stride = 1
	}
	lg := 16
	for lg < 23 && 1<<lg < 64*len(keys) {
		lg++
	}
	f := &filter{bits: make([]uint64, 1<<lg/64), shift: uint32(32 - lg), stride: stride}
	for _, k := range keys {
		h := (le32(k) * filterMul) >> f.shift
		f.bits[h>>6] |= 1 << (h & 63)
	}
	return f
}

func (f *filter) has(x uint32) bool {
	h := (x * filterMul) >> f.shift
	return f.bits[h>>6]&(1<<(h&63)) != 0
}

// skip returns the first position i in [from, to) whose 4 bytes p[i:i+4]
// hit the filter, or to. p[to+2] must be within p.
func (f *filter) skip(p []byte, from, to int) int {
	bits, shift := f.bits, f.shift
	i := from
	for ; i+5 <= to; i += 4 {
		x := binary.LittleEndian.Uint64(p[i : i+8 : i+8])
		h0 := (uint32(x) * filterMul) >> shift
		h1 := (uint32(x>>8) * filterMul) >> shift
		h2 := (uint32(x>>16) * filterMul) >> shift
		h3 := (uint32(x>>24) * filterMul) >> shift
		if bits[h0>>6]&(1<<(h0&63)) != 0 || bits[h1>>6]&(1<<(h1&63)) != 0 ||
			bits[h2>>6]&(1<<(h2&63)) != 0 || bits[h3>>6]&(1<<(h3&63)) != 0 {
			break
		}
	}
	for ; i < to; i++ {
		if f.has(le32(p[i:])) {
			return i
		}
	}
	return i
}

// skip2 is skip with stride 2: it probes from, from+2, ... and returns the
// first position that hits, or the first probe position at or after to.
func (f *filter) skip2(p []byte, from, to int) int {
	bits, shift := f.bits, f.shift
	i := from
	for ; i+4 < to && i+8 <= len(p); i += 6 {
		x := binary.LittleEndian.Uint64(p[i : i+8 : i+8])
		h0 := (uint32(x) * filterMul) >> shift
		h1 := (uint32(x>>16) * filterMul) >> shift
		h2 := (uint32(x>>32) * filterMul) >> shift
		if bits[h0>>6]&(1<<(h0&63)) != 0 || bits[h1>>6]&(1<<(h1&63)) != 0 || bits[h2>>6]&(1<<(h2&63)) != 0 {
			break
		}
	}
	for ; i < to; i += 2 {
		if f.has(le32(p[i:])) {
			return i
		}
	}
	return i
}
