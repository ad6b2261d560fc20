// Package mask removes secret values from a stream of log bytes.
//
// A [Set] is built once per run from the run's secret values. It derives
// every form in which a job commonly prints a secret (the raw value, without
// surrounding white space, the "\r\n" form a terminal produces and each
// line of a multi-line value; base64 and base64url in every alignment, URL,
// hex and JSON/Go string escaping) and compiles all of them into one
// Aho–Corasick automaton with a dense transition table (the full goto
// function over byte classes), so each input byte costs one table lookup
// however many secrets there are.
//
// A [Writer] runs the automaton over a stream. It keeps its state across
// writes, so a secret split over any number of writes (down to one byte per
// write) is still masked. It holds back only the bytes that could still be
// the beginning of a secret and releases them as soon as they can no longer
// be, or when the stream is flushed or closed; it never releases bytes on a
// timer.
//
// Masking rule: a byte is covered if it lies inside any occurrence of any
// pattern. Every maximal run of covered bytes is replaced by one copy of the
// mask string; every other byte is passed through unchanged and in order.
package mask

import (
	"bytes"
	"math"
)

// DefaultMinLength is the shortest secret value masked when
// [Options.MinLength] is zero. Shorter values would mask ordinary words.
const DefaultMinLength = 6

// DefaultMask replaces secrets when [Options.Mask] is nil.
const DefaultMask = "******"

// Options configures a [Set]. The zero value is the recommended setting.
type Options struct {
	// MinLength is the shortest secret value, and the shortest derived
	// pattern, that is masked. Zero means DefaultMinLength.
	MinLength int
	// Mask replaces each run of covered bytes. Nil means DefaultMask.
	Mask []byte
	// DisableEncodings masks only the values as they are (and their
	// trimmed, "\r\n" and line-by-line forms), not their base64, URL, hex
	// and string-escaped forms.
	DisableEncodings bool
}

// Report describes how a [Set] was built. It never contains secret values.
type Report struct {
	// TooShort lists, in increasing order, the indexes of the secrets that
	// are not masked because they are shorter than MinLength. The caller
	// should log their names once per run.
	TooShort []int
	// Patterns is the number of distinct byte strings searched for.
	Patterns int
	// States is the number of automaton states.
	States int
	// TableBytes is the size of the transition table.
	TableBytes int
}

// Set is a compiled set of secrets. It is immutable and safe for concurrent
// use by all the writers of a run.
type Set struct {
	// table is the full goto function over byte classes. A state is
	// represented by the start of its row, id*stride; entries hold the
	// target's row start, so the next state is table[s+class[b]].
	table []int32
	// class maps a byte to its column. Bytes that occur in no pattern
	// share column 0: from every state they lead to the root. Each byte
	// that occurs in a pattern has a column of its own.
	class [256]int32
	// stride is the number of columns.
	stride int32
	// matchBase is the row start of the first state that ends a match;
	// states are numbered so that exactly those at or above it do.
	matchBase int32
	// depth[id] is the length of the string the state stands for: the
	// longest suffix of the input that is a prefix of some pattern.
	depth []int32
	// cover[id] is the length of the longest pattern that ends at this
	// state, zero if none.
	cover []int32
	// maxLen is the length of the longest pattern.
	maxLen int
	mask   []byte
	// laneMin is, beyond twice the lanes' warm-up, the shortest write
	// scanned in interleaved lanes; tests lower it to exercise lanes on
	// short inputs.
	laneMin int
}

// NewSet compiles secrets into a Set. Secrets shorter than the minimum
// length are skipped and listed in the report; patterns derived from the
// others that are shorter than the minimum length are dropped. NewSet keeps
// no reference to secrets.
//
// The transition table takes about 4 bytes × (distinct bytes in the
// patterns + 1) per state, one state per distinct pattern prefix: about
// 70 KiB per 32-byte token with encodings. NewSet panics if the table
// would exceed 2³¹ entries (some 100 000 such tokens); callers should
// bound the number of secrets of a run well below that.
func NewSet(secrets [][]byte, opts Options) (*Set, Report) {
	pats, rep := patterns(secrets, opts)
	set := build(pats)
	set.mask = []byte(DefaultMask)
	if opts.Mask != nil {
		set.mask = bytes.Clone(opts.Mask)
	}
	rep.Patterns = len(pats)
	rep.States = len(set.depth)
	rep.TableBytes = 4 * len(set.table)
	return set, rep
}

// patterns returns the distinct patterns derived from secrets that are at
// least the minimum length, and the report of skipped secrets.
func patterns(secrets [][]byte, opts Options) ([][]byte, Report) {
	minLen := opts.MinLength
	if minLen <= 0 {
		minLen = DefaultMinLength
	}
	var rep Report
	var pats [][]byte
	seen := make(map[string]bool)
	for i, s := range secrets {
		if len(s) < minLen {
			rep.TooShort = append(rep.TooShort, i)
			continue
		}
		for _, p := range derive(s, !opts.DisableEncodings) {
			if len(p) < minLen || seen[string(p)] {
				continue
			}
			seen[string(p)] = true
			pats = append(pats, bytes.Clone(p))
		}
	}
	return pats, rep
}

// trieNode is a node of the pattern trie used while building the automaton.
type trieNode struct {
	kid, sib int32 // first child and next sibling; 0 (the root) means none
	label    byte  // the byte on the edge from the parent
	fail     int32
	depth    int32
	cover    int32
}

// build compiles patterns into the dense automaton.
func build(pats [][]byte) *Set {
	total := 1
	for _, p := range pats {
		total += len(p)
	}
	nodes := make([]trieNode, 1, total)
	edges := make(map[uint64]int32, total) // parent<<8 | byte → child
	child := func(n int32, c byte) (int32, bool) {
		t, ok := edges[uint64(n)<<8|uint64(c)]
		return t, ok
	}
	maxLen := 0
	for _, p := range pats {
		maxLen = max(maxLen, len(p))
		n := int32(0)
		for _, c := range p {
			t, ok := child(n, c)
			if !ok {
				t = int32(len(nodes))
				nodes = append(nodes, trieNode{sib: nodes[n].kid, label: c, depth: nodes[n].depth + 1})
				nodes[n].kid = t
				edges[uint64(n)<<8|uint64(c)] = t
			}
			n = t
		}
		nodes[n].cover = int32(len(p))
	}

	// Breadth-first order: a node's failure link is shallower, so it is
	// complete before the node is visited.
	order := make([]int32, 0, len(nodes))
	order = append(order, 0)
	for i := 0; i < len(order); i++ {
		n := order[i]
		for t := nodes[n].kid; t != 0; t = nodes[t].sib {
			c := nodes[t].label
			f := int32(0)
			if n != 0 {
				for f = nodes[n].fail; ; f = nodes[f].fail {
					if g, ok := child(f, c); ok {
						f = g
						break
					}
					if f == 0 {
						break
					}
				}
			}
			nodes[t].fail = f
			nodes[t].cover = max(nodes[t].cover, nodes[f].cover)
			order = append(order, t)
		}
	}

	// Number states: those without a match first (in breadth-first
	// order, so the root is 0), then those that end a match.
	id := make([]int32, len(nodes))
	next := int32(0)
	for _, n := range order {
		if nodes[n].cover == 0 {
			id[n] = next
			next++
		}
	}
	matchID := next
	for _, n := range order {
		if nodes[n].cover != 0 {
			id[n] = next
			next++
		}
	}

	var class [256]int32
	stride := int32(1)
	for _, p := range pats {
		for _, c := range p {
			if class[c] == 0 {
				class[c] = stride
				stride++
			}
		}
	}
	if int64(len(nodes))*int64(stride) > math.MaxInt32 {
		panic("mask: too many secrets for one automaton")
	}
	set := &Set{
		table:     make([]int32, len(nodes)*int(stride)),
		matchBase: matchID * stride,
		stride:    stride,
		class:     class,
		depth:     make([]int32, len(nodes)),
		cover:     make([]int32, len(nodes)),
		maxLen:    maxLen,
		laneMin:   64,
	}
	for _, n := range order {
		row := set.table[int(id[n]*stride):][:stride]
		if n != 0 {
			copy(row, set.table[int(id[nodes[n].fail]*stride):][:stride])
		}
		for t := nodes[n].kid; t != 0; t = nodes[t].sib {
			row[class[nodes[t].label]] = id[t] * stride
		}
		set.depth[id[n]] = nodes[n].depth
		set.cover[id[n]] = nodes[n].cover
	}
	return set
}
