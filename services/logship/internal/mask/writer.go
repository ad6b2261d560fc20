package mask

import (
	"bytes"
	"encoding/binary"
	"io"
	"slices"
	"sort"
)

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

// posMap maps the positions of a view's bytes to raw stream positions:
// entry {v, off} says that view bytes from v on (to the next entry) are at
// raw position v+off. It keeps at least one entry.
type posMap struct{ e []pmEntry }

type pmEntry struct{ v, off int64 }

func (m *posMap) reset(v, off int64) { m.e = append(m.e[:0], pmEntry{v, off}) }

func (m *posMap) lastV() int64 { return m.e[len(m.e)-1].v }

func (m *posMap) set(v, off int64) {
	last := &m.e[len(m.e)-1]
	if last.off == off {
		return
	}
	if last.v == v {
		last.off = off
		return
	}
	m.e = append(m.e, pmEntry{v, off})
}

func (m *posMap) rawOf(v int64) int64 {
	e := m.e
	if len(e) == 1 {
		return v + e[0].off
	}
	i := sort.Search(len(e), func(i int) bool { return e[i].v > v }) - 1
	return v + e[max(i, 0)].off
}

// trim drops the entries before the one that maps view position v.
func (m *posMap) trim(v int64) {
	if len(m.e) == 1 {
		return
	}
	i := sort.Search(len(m.e), func(i int) bool { return m.e[i].v > v }) - 1
	if i > 0 {
		m.e = append(m.e[:0], m.e[i:]...)
	}
}

// from sets m to the entries of src from the one that maps view position v.
func (m *posMap) from(src *posMap, v int64) {
	i := sort.Search(len(src.e), func(i int) bool { return src.e[i].v > v }) - 1
	m.e = append(m.e[:0], src.e[max(i, 0):]...)
}

// view is a decoding view's state while it is active (see the package
// documentation); inactive, it is the raw view's.
type view struct {
	active bool
	s      int32
	vpos   int64 // view bytes read
	// irreg is one past the view position of the last decoded byte (one
	// read from an escape, not from one raw byte).
	irreg int64
	pm    posMap
	dec   decoder
}

// Writer masks the secrets of a [Set] in the bytes written to it and writes
// the result to its destination. A Writer is for one goroutine.
//
// Positions below are offsets in the stream of all bytes ever written.
type Writer struct {
	set *Set
	a   *automaton
	dst io.Writer

	pos  int64 // bytes consumed
	done int64 // positions below done have been settled into out

	// buf holds the raw bytes of positions [bufStart, pos) not settled by
	// the previous writes (bufStart == done between writes).
	buf, spare []byte
	bufStart   int64

	// The raw view: automaton state, view bytes read (raw bytes but the
	// line breaks skipped) and their raw positions.
	s0  int32
	v0  int64
	pm0 posMap

	views   [numViews]view
	nActive int
	scans   []scanner

	// spans are the covered runs not yet settled; spans[head:] are live.
	// sorted: they are in order, disjoint and not adjacent.
	spans  []span
	head   int
	sorted bool

	out    []byte
	stats  Stats
	err    error
	closed bool
}

// NewWriter returns a Writer that writes the masked stream to dst. The
// Writer does not close dst.
func (s *Set) NewWriter(dst io.Writer) *Writer {
	w := &Writer{set: s, a: s.a, dst: dst, sorted: true}
	w.pm0.reset(0, 0)
	w.views[viewPercent].dec.kind = viewPercent
	w.views[viewPercent].dec.plus = s.plus
	w.views[viewEscape].dec.kind = viewEscape
	return w
}

// Stats returns the writer's counters so far.
func (w *Writer) Stats() Stats { return w.stats }

// Pending returns the number of bytes written to w and not yet settled:
// bytes that could still begin a secret, and covered bytes whose mask is
// not written yet (a match right after them would join it). When it is
// zero, w holds nothing back and is as a new writer: its destination has
// the masked form of everything written so far, and no secret begun
// before this point is looked for after it.
func (w *Writer) Pending() int { return int(w.pos - w.done) }

// Clean reports whether Pending is zero.
func (w *Writer) Clean() bool { return w.pos == w.done }

// maxChunk bounds the bytes scanned before output is written, which bounds
// the writer's buffers however large a single Write is.
const maxChunk = 64 << 10

// Write masks p and writes to the destination every byte that can no
// longer be part of a secret. A failure of the destination is returned by
// this and every later call; n then counts the bytes of p whose output was
// written.
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
		w.scan(chunk, pos0)
		w.pos = pos0 + int64(len(chunk))
		w.settle(chunk, pos0, w.holdBound(), false)
		w.keep(chunk, pos0)
		if err := w.writeOut(); err != nil {
			return n, err
		}
		n += len(chunk)
	}
	return n, nil
}

// scan runs the views over p, which starts at stream position pos0, and
// records the covered spans.
//
// The raw view alternates two modes. In automaton mode every byte is a
// transition. It leaves it when no decoding view or scanner is active and
// the state's string (less than 4 bytes) cannot begin a pattern by the
// filter; in skip mode it only probes the filter at each position, and
// returns to automaton mode, with the exact state recomputed from at most
// the last 3 bytes, at a position that may begin a pattern or an escape.
// (No pattern string of 4 bytes or more can be alive in skip mode: its first
// 4 bytes would have hit the filter.)
func (w *Writer) scan(p []byte, pos0 int64) {
	a, set := w.a, w.set
	filt := set.filt
	n := len(p)
	s, v := w.s0, w.v0
	i := 0
	// stops[k] is the position of the next set.stopBytes[k] at or after
	// the skip loop's position (stale when below it).
	stops := [3]int{-1, -1, -1}
	for i < n {
		// Automaton mode.
		for i < n {
			c := p[i]
			r := pos0 + int64(i)
			if set.stop[c] {
				w.trigger(c, s, v)
			}
			skipped := false
			if s < a.nShallow {
				s = a.dense[s*a.stride+a.class[c]]
				v++
			} else if isBreak(c) && a.skipBreak(s, c) {
				w.pm0.set(v, r+1-v) // skipped: the next view byte is after it
				skipped = true
			} else {
				s1 := a.deep(s, c)
				v++
				if s1 == s && w.nActive == 0 && len(w.scans) == 0 && !set.stop[c] && a.flags[s]&(fMatch|fAnchor) == 0 {
					// A self-loop: a run of c leaves the state as it is.
					j := runEnd(p, i+1, c)
					v += int64(j - i - 1)
					i = j - 1
					r = pos0 + int64(i)
				}
				s = s1
			}
			if len(w.scans) > 0 {
				w.feedScans(c, r)
			}
			if a.flags[s]&(fMatch|fAnchor) != 0 && !skipped {
				w.hit(s, v, r)
			}
			if w.nActive > 0 {
				w.feedViews(c, r, s, v)
			}
			i++
			if filt != nil && s < a.nShallow && w.nActive == 0 && len(w.scans) == 0 && i+3 < n {
				d := int(a.depth[s])
				if d <= i && v-int64(d) >= w.pm0.lastV() && missAll(filt, p, i-d, i-filt.stride+1) {
					break
				}
			}
		}
		if i >= n {
			break
		}
		// Skip mode, from y in state sy, up to the next byte that starts
		// an escape.
		y, sy := i, s
		lim := n - 3
		for k := range set.stopBytes {
			if stops[k] < i {
				stops[k] = n
				if j := bytes.IndexByte(p[i:], set.stopBytes[k]); j >= 0 {
					stops[k] = i + j
				}
			}
			lim = min(lim, stops[k])
		}
		st := filt.stride
		var h int
		if st == 2 {
			h = filt.skip2(p, i, lim)
		} else {
			h = filt.skip(p, i, lim)
		}
		if h < lim {
			i = max(h-st+1, y) // a pattern may begin up to st-1 bytes before h
		} else {
			i = lim
		}
		// The exact state at i: no string of more than st+2 bytes that
		// begins a pattern can be alive in skip mode.
		if i-y <= st+2 {
			s = sy
			for _, c := range p[y:i] {
				s = a.step(s, c)
			}
		} else {
			s = 0
			for _, c := range p[i-st-2 : i] {
				s = a.step(s, c)
			}
		}
		v += int64(i - y)
	}
	w.s0, w.v0 = s, v
}

// missAll reports whether no position in p[from:to] hits the filter (every
// p[k:k+4] is within p). A state's string of d < 4 bytes, ending at i, may
// be left for skip mode when the positions it begins at, but the last
// stride-1 (probed again from i), cannot begin a pattern.
func missAll(f *filter, p []byte, from, to int) bool {
	for k := from; k < to; k++ {
		if f.has(le32(p[k:])) {
			return false
		}
	}
	return true
}

// runEnd returns the end of the run of c that starts at p[i].
func runEnd(p []byte, i int, c byte) int {
	rep := uint64(c) * 0x0101010101010101
	for i+8 <= len(p) && binary.LittleEndian.Uint64(p[i:]) == rep {
		i += 8
	}
	for i < len(p) && p[i] == c {
		i++
	}
	return i
}

// hit handles a state of the raw view that ends a match or an anchor: v view
// bytes were read, the last at raw position r.
func (w *Writer) hit(s int32, v, r int64) {
	a := w.a
	f := a.flags[s]
	if f&fMatch != 0 {
		w.addSpan(w.pm0.rawOf(v-int64(a.cover(s))), r+1)
	}
	if f&fAnchor != 0 && len(w.scans) < 64 {
		ref := w.set.anchors[a.anchor(s)]
		w.scans = append(w.scans, newScanner(&w.set.formats[ref.format], w.pm0.rawOf(v-int64(ref.len)), r+1))
	}
}

func (w *Writer) feedScans(c byte, r int64) {
	k := 0
	for i := range w.scans {
		sc := &w.scans[i]
		if done, end := sc.feed(c, r); done {
			if end > sc.start {
				w.addSpan(sc.start, end)
			}
			continue
		}
		w.scans[k] = *sc
		k++
	}
	w.scans = w.scans[:k]
}

// trigger activates the decoding view that byte c starts, if inactive,
// in the raw view's state s after v view bytes.
func (w *Writer) trigger(c byte, s int32, v int64) {
	k := viewPercent
	if c == '\\' {
		k = viewEscape
	}
	vw := &w.views[k]
	if vw.active {
		return
	}
	vw.active = true
	w.nActive++
	vw.s, vw.vpos = s, v
	vw.pm.from(&w.pm0, v-int64(w.a.depth[s]))
}

// feedViews reads the raw byte c at position r in the active views, and
// deactivates those that agree with the raw view again (state s0 after v0
// view bytes): same state, and both states' strings without a skipped or
// decoded byte, so they cover the same raw bytes.
func (w *Writer) feedViews(c byte, r int64, s0 int32, v0 int64) {
	a := w.a
	for k := range w.views {
		vw := &w.views[k]
		if !vw.active {
			continue
		}
		vw.dec.out = vw.dec.out[:0]
		vw.dec.feed(c, r)
		for _, b := range vw.dec.out {
			w.viewByte(vw, b)
		}
		if vw.dec.n == 0 && vw.s == s0 {
			d := int64(a.depth[s0])
			if d == 0 || (vw.pm.lastV() <= vw.vpos-d && vw.irreg <= vw.vpos-d && w.pm0.lastV() <= v0-d) {
				vw.active = false
				w.nActive--
			}
		}
	}
}

// viewByte reads one byte of a decoding view.
func (w *Writer) viewByte(vw *view, b vbyte) {
	a := w.a
	if isBreak(b.c) && a.skipBreak(vw.s, b.c) {
		return // skipped
	}
	vw.pm.set(vw.vpos, b.rs-vw.vpos)
	vw.s = a.step(vw.s, b.c)
	vw.vpos++
	if b.re-b.rs != 1 {
		vw.irreg = vw.vpos
	}
	if a.flags[vw.s]&fMatch != 0 {
		w.addSpan(vw.pm.rawOf(vw.vpos-int64(a.cover(vw.s))), b.re)
	}
}

func (w *Writer) addSpan(start, end int64) {
	if k := len(w.spans); k > w.head && w.sorted {
		last := &w.spans[k-1]
		if start >= last.start {
			if start <= last.end {
				last.end = max(last.end, end)
				return
			}
		} else {
			w.sorted = false
		}
	}
	w.spans = append(w.spans, span{start, end})
}

// normalize sorts the live spans and merges those that overlap or touch.
func (w *Writer) normalize() {
	if w.sorted {
		return
	}
	live := w.spans[w.head:]
	slices.SortFunc(live, func(x, y span) int {
		switch {
		case x.start < y.start:
			return -1
		case x.start > y.start:
			return 1
		}
		return 0
	})
	k := 0
	for _, sp := range live {
		if k > 0 && sp.start <= live[k-1].end {
			live[k-1].end = max(live[k-1].end, sp.end)
			continue
		}
		live[k] = sp
		k++
	}
	w.spans = w.spans[:w.head+k]
	w.sorted = true
}

// holdBound returns the first position that may still be covered: the
// start of the strings of the views' states, of an escape being decoded,
// of a scanner's token.
func (w *Writer) holdBound() int64 {
	a := w.a
	b := w.pos
	if d := a.depth[w.s0]; d > 0 {
		b = min(b, w.pm0.rawOf(w.v0-int64(d)))
	}
	w.pm0.trim(w.v0 - int64(a.depth[w.s0]))
	for k := range w.views {
		vw := &w.views[k]
		if !vw.active {
			continue
		}
		if d := a.depth[vw.s]; d > 0 {
			b = min(b, vw.pm.rawOf(vw.vpos-int64(d)))
		}
		vw.pm.trim(vw.vpos - int64(a.depth[vw.s]))
		if vw.dec.n > 0 {
			b = min(b, vw.dec.start)
		}
	}
	for _, sc := range w.scans {
		b = min(b, sc.anchor)
	}
	return b
}

// settle appends to out the stream up to position bound, below which no
// future match can start: raw bytes, and one mask per covered span that can
// no longer grow. A span ending exactly at bound is kept, since a match
// starting at bound would join it. If final, the stream has ended and
// everything is settled. p is the current write, starting at pos0.
func (w *Writer) settle(p []byte, pos0, bound int64, final bool) {
	w.normalize()
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
		w.done = max(w.done, sp.end)
		w.head++
	}
	if w.head == len(w.spans) {
		w.spans, w.head = w.spans[:0], 0
	}
	w.raw(p, pos0, bound)
}

// raw appends the raw bytes of positions [done, to) to out. They come from
// buf and then from p, which starts at position pos0.
func (w *Writer) raw(p []byte, pos0, to int64) {
	if to <= w.done {
		return
	}
	if w.done < pos0 {
		w.out = append(w.out, w.buf[w.done-w.bufStart:min(to, pos0)-w.bufStart]...)
		w.done = min(to, pos0)
	}
	if w.done < to {
		w.out = append(w.out, p[w.done-pos0:to-pos0]...)
		w.done = to
	}
}

// keep saves in buf the raw bytes of positions [done, pos), taken from the
// old buf and p, which started at position pos0.
func (w *Writer) keep(p []byte, pos0 int64) {
	if w.done >= pos0 {
		w.buf = append(w.buf[:0], p[w.done-pos0:]...)
	} else {
		w.spare = append(append(w.spare[:0], w.buf[w.done-w.bufStart:]...), p...)
		w.buf, w.spare = w.spare, w.buf
	}
	w.bufStart = w.done
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
// resets the writer, as at the end of the stream: a secret whose first
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
	for k := range w.views {
		vw := &w.views[k]
		if vw.active {
			vw.dec.out = vw.dec.out[:0]
			vw.dec.drain()
			for _, b := range vw.dec.out {
				w.viewByte(vw, b)
			}
			vw.active = false
		}
	}
	w.nActive = 0
	for _, sc := range w.scans {
		if end := sc.close(w.pos); end > sc.start {
			w.addSpan(sc.start, end)
		}
	}
	w.scans = w.scans[:0]
	w.settle(nil, w.pos, w.pos, true)
	w.s0 = 0
	w.pm0.reset(w.v0, w.pos-w.v0)
	w.buf, w.bufStart = w.buf[:0], w.pos
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
