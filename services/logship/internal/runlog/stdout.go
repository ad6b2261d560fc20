package runlog

import (
	"fmt"
	"time"

	"github.com/hangar-dev/hangar/services/logship/internal/spool"
)

// lineBatch is committed masked output for standard output, with the time
// and stream of its chunks.
type lineBatch struct {
	data   []byte
	t      time.Time
	stream string
}

// feedLines writes the lines of batches to standard output. The caller
// holds commitMu, which guards the line emitter; not the run's lock, so
// that chunks keep being masked meanwhile.
func (r *run) feedLines(batches []lineBatch) {
	for _, b := range batches {
		r.lines.feed(b.data, b.t, b.stream)
	}
}

// recycleLocked gives back the buffer of batches, fed, for r.out.
func (r *run) recycleLocked(batches []lineBatch) {
	if len(batches) > 0 {
		r.outSpare = batches[0].data[:0]
	}
}

// outMetaLocked returns the time and stream of the first n bytes of r.out
// (the bytes of a commit): the first run's time, and the runs' stream if
// they share one; false if there are none.
func (r *run) outMetaLocked(n int) (time.Time, string, bool) {
	if n <= 0 || len(r.outRuns) == 0 {
		return time.Time{}, "", false
	}
	first := r.outRuns[0]
	stream, end := first.stream, first.end
	for _, o := range r.outRuns[1:] {
		if end >= n {
			break
		}
		if o.stream != stream {
			stream = ""
		}
		end = o.end
	}
	return first.time, string(stream), true
}

// linesStateLocked records in st where standard output stands: the
// position up to which lines were written (everything, when off), with
// the time and stream of the bytes from there: the partial line's, else
// those of the first n bytes of r.out, being committed.
func (r *run) linesStateLocked(st *spool.State, n int) {
	if r.lines == nil {
		st.StdoutEmitted, st.StdoutTime, st.StdoutStream = streamEnd(*st), 0, ""
		return
	}
	st.StdoutEmitted, st.StdoutTime, st.StdoutStream = r.lines.emitted(), 0, ""
	if len(r.lines.partial) == 0 {
		if t, stream, ok := r.outMetaLocked(n); ok {
			st.StdoutTime, st.StdoutStream = t.UnixNano(), stream
		}
	}
	if len(r.lines.partial) > 0 {
		st.StdoutTime, st.StdoutStream = r.lines.ptime.UnixNano(), r.lines.pstream
		if r.lines.pmixed {
			st.StdoutStream = ""
		}
	}
}

// saveLinesLocked records where standard output stands, at a clean
// shutdown, so that the next logship writes no line twice.
func (r *run) saveLinesLocked() {
	if r.lines == nil || r.state.Closed || r.fileClosed || r.finished {
		return
	}
	st := r.state
	r.linesStateLocked(&st, 0)
	if st == r.state {
		return
	}
	if err := r.sp.SaveState(st); err != nil {
		r.m.log.Warn("recording the standard output position failed; some lines may be written again after the restart",
			"run_id", r.id, "err", err)
		return
	}
	r.state = st
}

// resumeLinesLocked, for a run loaded from the spool, writes again the
// lines from the recorded standard output position (see the package
// documentation), holding the partial line at the end.
func (r *run) resumeLinesLocked() error {
	if r.lines == nil {
		return nil
	}
	st := r.state
	from, end := st.StdoutEmitted, streamEnd(st)
	if st.TailBytes > 0 {
		from = max(from, st.MaskedBytes+st.TailBase) // older tail bytes are gone
	}
	from = min(from, end)
	r.lines.pos = from
	if st.StdoutTime != 0 {
		r.lines.ptime, r.lines.pstream = time.Unix(0, st.StdoutTime), st.StdoutStream
	}
	t, stream := r.lines.ptime, r.lines.pstream
	if t.IsZero() {
		t = time.Now()
	}
	buf := make([]byte, 64<<10)
	for from < end {
		n := min(int64(len(buf)), end-from)
		var err error
		if from < st.MaskedBytes {
			n = min(n, st.MaskedBytes-from)
			_, err = r.sp.ReadAt(buf[:n], from)
		} else {
			_, err = r.sp.ReadTailAt(buf[:n], from-st.MaskedBytes)
		}
		if err != nil {
			return fmt.Errorf("read spool for standard output: %w", err)
		}
		r.lines.feed(buf[:n], t, stream)
		from += n
	}
	return nil
}
