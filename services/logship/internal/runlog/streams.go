package runlog

import (
	"cmp"
	"slices"

	"github.com/hangar-dev/hangar/services/logship/internal/mask"
)

// numStreams is the number of streams masked apart: stdout, stderr,
// system, and chunks of no (or an unknown) stream.
const numStreams = 4

// Indexes of the streams in run.streams.
const (
	idxStdout = iota
	idxStderr
	idxSystem
	idxOther
)

// streamOrder names the streams by index.
var streamOrder = [numStreams]Stream{StreamStdout, StreamStderr, StreamSystem, ""}

// streamIndex returns the index of a chunk's stream in run.streams.
func streamIndex(s Stream) int {
	switch s {
	case StreamStdout:
		return idxStdout
	case StreamStderr:
		return idxStderr
	case StreamSystem:
		return idxSystem
	}
	return idxOther
}

// idleFlushBytes bounds how far one stream's held-back bytes may trail the
// other streams: once the run received that many raw bytes since the last
// chunk of a stream whose masker still holds bytes back, that masker is
// flushed (see the package documentation). A variable for the tests.
var idleFlushBytes int64 = 1 << 20

// tracked is a masker and whether it holds anything back.
type tracked struct {
	w *mask.Writer
	// dirty: w holds something back (it is not at a clean point).
	dirty bool
}

// settle records whether t is at a clean point after its last write:
// its masker holds nothing back (mask.Writer.Clean: it is then as a new
// writer). It keeps r.dirty, the number of maskers not at a clean point.
func (t *tracked) settle(r *run) {
	if !t.w.Clean() {
		if !t.dirty {
			t.dirty = true
			r.dirty++
		}
		return
	}
	if t.dirty {
		t.dirty = false
		r.dirty--
	}
}

// streamMasker is the masker of one stream of a run.
type streamMasker struct {
	tracked
	// lastIn is run.in after the stream's last chunk; lastSeq that
	// chunk's sequence.
	lastIn  int64
	lastSeq uint64
}

// streamSink receives a stream's masked output: it goes to the merge.
type streamSink struct {
	r      *run
	stream int
}

func (k streamSink) Write(p []byte) (int, error) {
	if err := k.r.merge.write(k.r, k.stream, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeStreamsLocked masks one chunk's data through its stream's masker
// into the merge. A chunk of the system stream (the executor's own lines:
// phase headers, the closing footer) is a boundary of the job's output:
// the other streams' maskers are flushed first, so that what they held
// back comes before it.
func (r *run) writeStreamsLocked(seq uint64, i int, data []byte) error {
	if i == idxSystem {
		if err := r.flushStreamsLocked(idxSystem); err != nil {
			return err
		}
	}
	sm := &r.streams[i]
	if _, err := sm.w.Write(data); err != nil {
		return err
	}
	r.in += int64(len(data))
	sm.lastIn, sm.lastSeq = r.in, seq
	sm.settle(r)
	if r.dirty > 0 {
		return r.flushIdleLocked(i)
	}
	return nil
}

// flushIdleLocked flushes the maskers, but that of stream cur, which hold
// bytes back while idleFlushBytes were written since their stream's last
// chunk, so that acknowledgements never wait on a silent stream for ever.
func (r *run) flushIdleLocked(cur int) error {
	for j := range r.streams {
		sm := &r.streams[j]
		if j == cur || !sm.dirty || r.in-sm.lastIn < idleFlushBytes {
			continue
		}
		if err := r.flushStreamLocked(j); err != nil {
			return err
		}
		r.m.log.Info("flushed the bytes a stream's masker held back, the stream being silent while other streams went on",
			"run_id", r.id, "stream", string(streamOrder[j]), "bytes_since", r.in-sm.lastIn)
	}
	return nil
}

// flushStreamLocked writes what stream j's masker holds back (its
// automaton restarts).
func (r *run) flushStreamLocked(j int) error {
	sm := &r.streams[j]
	if err := sm.w.Flush(); err != nil {
		return err
	}
	sm.settle(r)
	return nil
}

// flushStreamsLocked flushes the maskers that hold something back, but
// that of stream except (-1: none), in the order of their streams' last
// chunks, so that held-back bytes keep their streams' arrival order.
func (r *run) flushStreamsLocked(except int) error {
	var order []int
	for j := range r.streams {
		if j != except && r.streams[j].dirty {
			order = append(order, j)
		}
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Compare(r.streams[a].lastSeq, r.streams[b].lastSeq)
	})
	for _, j := range order {
		if err := r.flushStreamLocked(j); err != nil {
			return err
		}
	}
	return nil
}
