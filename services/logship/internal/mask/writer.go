package mask

import "io"

// Stats counts a writer's traffic.
type Stats struct {
	// BytesIn is the number of bytes accepted by Write.
	BytesIn int64
	// BytesOut is the number of bytes written to the destination.
	BytesOut int64
	// Masks is the number of mask strings written.
	Masks int64
}

// span is a run of covered stream positions [start, end).
type span struct{ start, end int64 }

// maxSpans bounds the pending spans kept within one Write before they are
// settled early.
const maxSpans = 64

// Writer masks the secrets of a [Set] in the bytes written to it and writes
// the result to its destination. A Writer is for one goroutine.
//
// Positions below are offsets in the stream of all bytes ever written.
type Writer struct {
	set *Set
	dst io.Writer

	state int32 // current automaton state (row start)
	pos   int64 // bytes consumed
	done  int64 // positions below done have been settled into out

	// held holds the raw bytes of positions [pos-len(held), pos): the
	// string of the current state, the only bytes that may still begin a
	// secret. The bytes of positions before it are written or covered.
	held  []byte
	spare []byte

	// spans are the covered runs not yet settled, in order, disjoint and
	// not adjacent; spans[head:] are live.
	spans []span
	head  int

	events [lanes][]event // per-lane matches of the current scan

	out    []byte
	stats  Stats
	err    error
	closed bool
}

// NewWriter returns a Writer that writes the masked stream to dst. The
// Writer does not close dst.
func (s *Set) NewWriter(dst io.Writer) *Writer {
	return &Writer{set: s, dst: dst}
}

// Stats returns the writer's counters so far.
func (w *Writer) Stats() Stats { return w.stats }

// maxChunk bounds the bytes scanned before output is written, which bounds
// the writer's buffers however large a single Write is.
const maxChunk = 64 << 10

// Write masks p and writes to the destination every byte that can no
// longer be part of a secret. It holds back at most the longest pattern's
// length minus one bytes, plus one pending mask string. A failure of the
// destination is returned by this and every later call; n then counts the
// bytes of p whose output was written.
func (w *Writer) Write(p []byte) (n int, err error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, ErrClosed
	}
	for len(p) > 0 {
		chunk := p[:min(len(p), maxChunk)]
		p = p[len(chunk):]
		w.stats.BytesIn += int64(len(chunk))
		pos0 := w.pos
		w.scan(chunk)
		w.pos = pos0 + int64(len(chunk))
		w.settle(chunk, pos0, w.pos-int64(w.set.depth[w.state/w.set.stride]), false)
		w.keep(chunk, pos0)
		if err := w.writeOut(); err != nil {
			return n, err
		}
		n += len(chunk)
	}
	return n, nil
}

// lanes is the number of interleaved automaton runs scan uses on a long
// write. A run is one chain of dependent table loads, bound by load latency;
// independent runs over different parts of the write overlap their loads.
const lanes = 4

// event is a match found by a lane: the automaton entered state s (a state
// that ends a match) after p[i].
type event struct{ i, s int32 }

// scan runs the automaton over p, which starts at stream position w.pos,
// records the covered spans and leaves w.state at the state after p.
//
// A long p is split into lanes. The state after a byte depends only on the
// last maxLen bytes, so a lane that starts maxLen bytes before its part of p
// from the root state has the exact state when it reaches its part; matches
// it finds before its part (warm-up) belong to the previous lane and are
// ignored. Lanes record their matches, which are then applied in order.
func (w *Writer) scan(p []byte) {
	table, class, matchBase := w.set.table, &w.set.class, w.set.matchBase
	warm := w.set.maxLen
	if len(p) < 2*warm+w.set.laneMin {
		s := w.state
		for i, c := range p {
			s = table[s+class[c]]
			if s >= matchBase {
				w.match(p, w.pos, int64(i), s)
			}
		}
		w.state = s
		return
	}

	// Lane j scans p[j*d:][:n] and owns the matches ending in
	// p[own(j):end(j)], own(j) = j*d+warm for j > 0. The last lane also
	// scans the remainder of the division.
	n := (len(p) + (lanes-1)*warm) / lanes
	d := n - warm
	for j := range w.events {
		w.events[j] = w.events[j][:0]
	}
	st := [lanes]int32{w.state}
	for k := 0; k < n; k++ {
		k = run4(table, class, matchBase, p, d, k, n, &st)
		if k == n {
			break
		}
		for j, s := range st {
			if s >= matchBase {
				w.events[j] = append(w.events[j], event{int32(j*d + k), s})
			}
		}
	}
	s3 := st[lanes-1]
	for i := (lanes-1)*d + n; i < len(p); i++ {
		s3 = table[s3+class[p[i]]]
		if s3 >= matchBase {
			w.events[lanes-1] = append(w.events[lanes-1], event{int32(i), s3})
		}
	}
	for j := range lanes {
		for _, e := range w.events[j] {
			if j == 0 || int(e.i) >= j*d+warm {
				w.match(p, w.pos, int64(e.i), e.s)
			}
		}
	}
	w.state = s3
}

// run4 advances the four lane states st, lane j reading p[j*d+k], from k
// until n or until a lane enters a state that ends a match. It returns the
// index k of the byte after which that happened, or n.
func run4(table []int32, class *[256]int32, matchBase int32, p []byte, d, k, n int, st *[lanes]int32) int {
	s0, s1, s2, s3 := st[0], st[1], st[2], st[3]
	for ; k < n; k++ {
		s0 = table[s0+class[p[k]]]
		s1 = table[s1+class[p[k+d]]]
		s2 = table[s2+class[p[k+2*d]]]
		s3 = table[s3+class[p[k+3*d]]]
		if s0 >= matchBase || s1 >= matchBase || s2 >= matchBase || s3 >= matchBase {
			break
		}
	}
	st[0], st[1], st[2], st[3] = s0, s1, s2, s3
	return k
}

// match records that the pattern of length cover[s] ends at p[i], where p
// starts at stream position pos0.
func (w *Writer) match(p []byte, pos0, i int64, s int32) {
	end := pos0 + i + 1
	start := end - int64(w.set.cover[s/w.set.stride])
	// Merge with the pending spans it overlaps or touches. They all end
	// at or before end.
	for len(w.spans) > w.head {
		last := w.spans[len(w.spans)-1]
		if last.end < start {
			break
		}
		start = min(start, last.start)
		w.spans = w.spans[:len(w.spans)-1]
	}
	if len(w.spans)-w.head >= maxSpans {
		// Many disjoint secrets in one write: settle what is final.
		w.settle(p, pos0, end-int64(w.set.depth[s/w.set.stride]), false)
	}
	w.spans = append(w.spans, span{start, end})
}

// settle appends to out the stream up to position bound, below which no
// future match can start: raw bytes, and one mask per covered span that can
// no longer grow. A span ending exactly at bound is kept, since a match
// starting at bound would join it. If final, the stream has ended and
// everything is settled. p is the current write, starting at pos0.
func (w *Writer) settle(p []byte, pos0, bound int64, final bool) {
	for w.head < len(w.spans) {
		sp := w.spans[w.head]
		if !final && sp.end >= bound {
			if sp.start < bound {
				w.raw(p, pos0, sp.start)
				return
			}
			break
		}
		w.raw(p, pos0, sp.start)
		w.out = append(w.out, w.set.mask...)
		w.stats.Masks++
		w.done = sp.end
		w.head++
	}
	if w.head == len(w.spans) {
		w.spans, w.head = w.spans[:0], 0
	}
	w.raw(p, pos0, bound)
}

// raw appends the raw bytes of positions [done, to) to out. They come from
// held and then from p, which starts at position pos0.
func (w *Writer) raw(p []byte, pos0, to int64) {
	if to <= w.done {
		return
	}
	if w.done < pos0 {
		heldStart := pos0 - int64(len(w.held))
		w.out = append(w.out, w.held[w.done-heldStart:min(to, pos0)-heldStart]...)
		w.done = min(to, pos0)
	}
	if w.done < to {
		w.out = append(w.out, p[w.done-pos0:to-pos0]...)
		w.done = to
	}
}

// keep saves in held the bytes of the current state's string, taken from
// the old held bytes and p, which started at position pos0.
func (w *Writer) keep(p []byte, pos0 int64) {
	d := int(w.set.depth[w.state/w.set.stride])
	if d <= len(p) {
		w.held = append(w.held[:0], p[len(p)-d:]...)
		return
	}
	// The state's string reaches back into the old held bytes.
	old := w.held[len(w.held)-(d-len(p)):]
	w.spare = append(append(w.spare[:0], old...), p...)
	w.held, w.spare = w.spare, w.held
}

// writeOut writes out to the destination.
func (w *Writer) writeOut() error {
	if len(w.out) == 0 {
		return nil
	}
	n, err := w.dst.Write(w.out)
	w.stats.BytesOut += int64(n)
	if err == nil && n < len(w.out) {
		err = io.ErrShortWrite
	}
	w.out = w.out[:0]
	if err != nil {
		w.err = err
	}
	return err
}

// Flush writes every held byte and pending mask to the destination and
// resets the automaton, as at the end of the stream: a secret whose first
// bytes were written before Flush and whose last bytes come after it is
// not recognised. Use it at a boundary no secret spans, such as the end of
// a step.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return ErrClosed
	}
	w.settle(nil, w.pos, w.pos, true)
	w.state = 0
	w.held = w.held[:0]
	return w.writeOut()
}

// Close flushes the writer. It does not close the destination. Calling
// Close again returns nil.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	err := w.Flush()
	w.closed = true
	return err
}
