package runlog

// merger puts the streams' masked output together into the one stored
// log, in arrival order, a line at a time, and runs the last pass over it.
//
// Lines: when a stream's masked bytes come while the log's last line is
// open (not ended by a newline) and belongs to another stream, the merger
// ends that line with a newline first. So no line of the log ever holds
// bytes of two streams, and no sequence of bytes forms across streams
// within a line; a partial line (a prompt) is still written at once. The
// only bytes the log holds that the job did not print are those line
// breaks.
//
// The last pass is a masker over the merged log, on the run's set: a
// secret (or encoding of one) that forms only once the streams are put
// together, across a line break (a multi-line value whose lines went to
// different streams, say), is masked there. Its held-back bytes count for
// the clean points like those of the streams' maskers.
type merger struct {
	last tracked
	// owner is the index of the stream whose line is open at the end of
	// the merged log, -1 when the log ends at a line start. It is part of
	// a clean point (spool.State.OpenLine), so that a resumed run goes on
	// where it was.
	owner int
}

var lineBreak = []byte{'\n'}

// write appends the masked bytes p of stream i to the merged log.
func (g *merger) write(r *run, i int, p []byte) error {
	if len(p) == 0 {
		return nil
	}
	if g.owner >= 0 && g.owner != i {
		if err := g.pass(r, g.owner, lineBreak); err != nil {
			return err
		}
	}
	if err := g.pass(r, i, p); err != nil {
		return err
	}
	g.owner = i
	if p[len(p)-1] == '\n' {
		g.owner = -1
	}
	return nil
}

// pass runs p, merged bytes of stream i, through the last pass into the
// spool.
func (g *merger) pass(r *run, i int, p []byte) error {
	r.curStream = streamOrder[i]
	t := &g.last
	if _, err := t.w.Write(p); err != nil {
		return err
	}
	t.settle(r)
	return nil
}

// close flushes the last pass: the log ends.
func (g *merger) close(r *run) error {
	if err := g.last.w.Close(); err != nil {
		return err
	}
	g.last.settle(r)
	return nil
}

// noticeLocked writes a line of logship's own into the log, as the system
// stream, after what every masker held back.
func (r *run) noticeLocked(text string) error {
	// Not a chunk: a direct segment could not be masked again after it.
	if err := r.toStreamsLocked(); err != nil {
		return err
	}
	if err := r.flushStreamsLocked(-1); err != nil {
		return err
	}
	if err := r.merge.write(r, idxSystem, []byte(text)); err != nil {
		return err
	}
	if r.dirty == 0 {
		r.markCleanLocked()
	} else {
		r.seg = segStreams
	}
	return nil
}

// sink is the last pass's destination: the spool's log file up to the
// head limit, then its tail segment. It runs under r.mu (inside the
// masker's Write, Flush and Close).
type sink struct {
	r *run
}

func (k sink) Write(p []byte) (int, error) {
	r, all := k.r, p
	if room := r.state.HeadLimit - r.sp.Size(); room > 0 {
		head := p[:min(int64(len(p)), room)]
		if n, err := r.sp.Write(head); err != nil {
			return n, err
		}
		p = p[len(head):]
	}
	if len(p) > 0 {
		if n, err := r.sp.WriteTail(p); err != nil {
			return len(all) - len(p) + n, err
		}
	}
	if r.lines != nil {
		r.out = append(r.out, all...)
		if n := len(r.outRuns); n > 0 && r.outRuns[n-1].stream == r.curStream && r.outRuns[n-1].time.Equal(r.curTime) {
			r.outRuns[n-1].end = len(r.out)
		} else {
			r.outRuns = append(r.outRuns, outRun{end: len(r.out), stream: r.curStream, time: r.curTime})
		}
	}
	return len(all), nil
}
