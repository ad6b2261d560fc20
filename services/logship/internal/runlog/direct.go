package runlog

import (
	"time"
)

// One pass per byte (ADR 0021).
//
// At a clean point every masker, the streams' and the last pass, holds
// nothing and is as a new writer. From there, while the chunks are all of
// one stream, the streams' design (that stream's masker, the merge, the
// last pass over the merged log) puts the same bytes into the last pass
// as the merge of the raw chunks would, less what the stream's masker
// masks, which the last pass masks just the same: so those chunks go
// straight into the merge and are scanned once, by the last pass (a
// direct segment). The streams' maskers matter only once another
// stream's chunk comes before the next clean point: then the run is
// rolled back to the last clean point (the spool's bytes written since
// are not committed) and the chunks of the segment, kept for this, are
// masked again through their stream's masker (a streams segment, as
// before), and so is every chunk up to the next clean point. A run whose
// output is one stream (the default, ADR 0020), with the executor's
// system lines between phases (whole lines, so at clean points), is
// scanned once.

// segKind is the kind of the chunks written since the last clean point.
type segKind uint8

const (
	segNone    segKind = iota // none yet: at a clean point
	segDirect                 // all of stream segStream, through the last pass alone
	segStreams                // through their streams' maskers and the last pass
)

// maxKeptBytes bounds the chunks a direct segment keeps: past it, the
// segment is turned into a streams segment (its chunks masked again
// through their stream's masker) and the chunks are let go. A variable
// for the tests.
var maxKeptBytes int64 = 8 << 20

// keptChunk is a chunk of the current direct segment.
type keptChunk struct {
	seq    uint64
	stream int
	data   []byte
	time   time.Time
}

// writeChunkLocked masks one chunk's data into the merge: through the
// last pass alone in a direct segment, else through its stream's masker
// first (writeStreamsLocked).
func (r *run) writeChunkLocked(seq uint64, i int, data []byte) error {
	if r.seg == segDirect && r.segStream != i {
		if err := r.toStreamsLocked(); err != nil {
			return err
		}
	}
	if r.seg == segNone {
		r.seg, r.segStream = segDirect, i
	}
	if r.seg == segStreams {
		return r.writeStreamsLocked(seq, i, data)
	}
	if err := r.merge.write(r, i, data); err != nil {
		return err
	}
	r.in += int64(len(data))
	sm := &r.streams[i]
	sm.lastIn, sm.lastSeq = r.in, seq
	r.kept = append(r.kept, keptChunk{seq: seq, stream: i, data: data, time: r.curTime})
	r.keptBytes += int64(len(data))
	if r.keptBytes > maxKeptBytes && r.dirty > 0 {
		return r.toStreamsLocked()
	}
	return nil
}

// toStreamsLocked turns the current direct segment, if any, into a
// streams segment: the spool, the merge and the lines to write to
// standard output go back to the last clean point, the last pass starts
// anew there (it was as new), and the segment's chunks are masked again
// through their stream's masker, which is as new too. The run is then in
// a streams segment, or at a clean point (segNone) if the last of those
// chunks ends at one.
func (r *run) toStreamsLocked() error {
	if r.seg != segDirect {
		return nil
	}
	kept := r.kept
	r.kept, r.keptBytes, r.seg = nil, 0, segStreams
	if r.dirty == 0 {
		r.seg = segNone // at a clean point: nothing to do again
		return nil
	}
	cp := r.clean
	if err := r.sp.Truncate(cp.masked); err != nil {
		return err
	}
	if err := r.sp.TruncateTail(cp.tailEnd); err != nil {
		return err
	}
	r.out = r.out[:cp.outLen]
	k := 0
	for _, o := range r.outRuns {
		if start := r.outRunStart(k); start >= cp.outLen {
			break
		}
		o.end = min(o.end, cp.outLen)
		r.outRuns[k] = o
		k++
	}
	clear(r.outRuns[k:])
	r.outRuns = r.outRuns[:k]
	var streamMasks int64
	for i := range r.streams {
		streamMasks += r.streams[i].w.Stats().Masks
	}
	r.masksBase = cp.masks - streamMasks
	r.merge = merger{last: tracked{w: r.set.NewWriter(sink{r})}, owner: cp.line}
	r.dirty = 0
	last, lastTime := r.lastReceived, r.curTime
	for _, c := range kept {
		r.in -= int64(len(c.data))
	}
	for _, c := range kept {
		r.curTime, r.lastReceived = c.time, c.seq
		if err := r.writeStreamsLocked(c.seq, c.stream, c.data); err != nil {
			return err
		}
		if r.dirty == 0 {
			r.markCleanLocked()
		}
	}
	r.lastReceived, r.curTime = last, lastTime
	if r.dirty > 0 {
		r.seg = segStreams // a clean point in between started a segment
	}
	return nil
}

// outRunStart returns where run.outRuns[k] starts in run.out.
func (r *run) outRunStart(k int) int {
	if k == 0 {
		return 0
	}
	return r.outRuns[k-1].end
}

// cleanedLocked is called at each clean point: the next chunk starts a
// new segment. (The merge's line state needs nothing: at a clean point
// the last byte written is not covered, since a mask at the end of the
// bytes written is held until the next byte shows a match does not join
// it; so the raw bytes end with a newline exactly when their masked form
// does.)
func (r *run) cleanedLocked() {
	clear(r.kept)
	r.kept, r.keptBytes, r.seg = r.kept[:0], 0, segNone
}
