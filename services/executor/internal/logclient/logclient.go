// Package logclient streams one run's output to logship (hangar.logs.v1 Ship):
// output is cut into sequence-numbered chunks, kept until logship acknowledges
// them, and resent from logship's next expected sequence number whenever the
// stream has to be reopened (logship restarted, connection lost). Writers are
// slowed down, never dropped, when too much output waits for acknowledgement.
package logclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
)

// MaxChunk is the largest chunk sent. A ShipRequest carrying it fits
// gRPC's 32 KiB buffer tier: gRPC takes the buffers of a message from a
// pool of 256 B, 4, 16, 32 KiB and 1 MiB, and zeroes the whole buffer it
// hands out, so a 64 KiB chunk cost a 1 MiB clear on each side (the
// executor marshalling, logship receiving) for every chunk.
// BenchmarkStream: about 15% less CPU per byte than 64 KiB chunks; 1 MiB
// chunks were dearer.
const MaxChunk = 32<<10 - 256

// Client is the part of the logship client used here.
type Client interface {
	Ship(ctx context.Context, opts ...grpc.CallOption) (logsv1.LogService_ShipClient, error)
}

// Options tune a Stream.
type Options struct {
	// MaxUnacked bounds the output held for acknowledgement (default 8 MiB);
	// writers block beyond it.
	MaxUnacked int
	Logger     *slog.Logger
	Now        func() time.Time
	// OnCut, when set, is called for each chunk as it gets its sequence
	// number, before it is sent (under the stream's lock: keep it short).
	OnCut func(seq uint64, st logsv1.Stream, size int)
	// OnAck, when set, is called with each acknowledged sequence number
	// (logship stores every chunk through it durably), under the stream's
	// lock.
	OnAck func(through uint64)
}

type segment struct {
	stream logsv1.Stream
	data   []byte
}

// Stream is one run's log.
type Stream struct {
	client Client
	open   *logsv1.Open
	opts   Options
	log    *slog.Logger

	mu       sync.Mutex
	cond     *sync.Cond
	pending  []segment       // written, not yet cut into chunks
	unacked  []*logsv1.Chunk // sent or to send, not acknowledged
	size     int             // bytes in pending + unacked
	nextSeq  uint64          // sequence of the next chunk to cut
	acked    uint64          // highest acknowledged sequence
	closing  bool
	closed   *logsv1.Closed
	err      error
	done     chan struct{}
	lastSend uint64 // highest sequence sent on the current stream
	opened   chan struct{}
	firstSeq uint64 // next_sequence of the first Opened
	// free holds chunk buffers (capacity MaxChunk) whose chunks are
	// acknowledged: appendLocked takes them before allocating. A run
	// printing fast then allocates nothing per chunk: what it sends is
	// acknowledged at the rate it writes. Buffers in free and in use
	// together are never more than the stream held at once (MaxUnacked
	// and one write), and go with the Stream.
	free [][]byte
	// sentThrough is the highest sequence whose Send returned in the
	// current session: gRPC has copied those chunks (marshalled into its
	// own buffers) and no longer reads them. Only their buffers are
	// reused; a chunk acknowledged before its Send returned (a server
	// acknowledging what it was not sent) is left to the collector.
	sentThrough atomic.Uint64
	// codec marshals the stream's messages into buffers it reuses
	// without zeroing them (sendCodec).
	codec sendCodec
}

// Open starts shipping a run's log; it returns at once and connects in the
// background, retrying until ctx ends.
func Open(ctx context.Context, client Client, open *logsv1.Open, opts Options) *Stream {
	if opts.MaxUnacked == 0 {
		opts.MaxUnacked = 8 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Stream{client: client, open: open, opts: opts, log: opts.Logger, nextSeq: 1, done: make(chan struct{}), opened: make(chan struct{}), codec: newSendCodec()}
	s.cond = sync.NewCond(&s.mu)
	go s.loop(ctx)
	return s
}

// Writer returns an io.Writer for one output stream (stdout, stderr, system).
func (s *Stream) Writer(st logsv1.Stream) io.Writer { return writer{s, st} }

type writer struct {
	s  *Stream
	st logsv1.Stream
}

func (w writer) Write(p []byte) (int, error) { return w.s.write(w.st, p) }

func (s *Stream) write(st logsv1.Stream, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.size >= s.opts.MaxUnacked && s.err == nil && !s.closing {
		s.cond.Wait()
	}
	if s.err != nil {
		return 0, s.err
	}
	if s.closing {
		return 0, errors.New("logclient: write after Close")
	}
	s.size += len(p)
	s.appendLocked(st, p)
	s.cond.Broadcast()
	return len(p), nil
}

// appendLocked copies p into the pending segments of st, filling the last
// one up to MaxChunk first: every byte is copied once, and a run printing
// fast is sent in full chunks whatever the size of its writes.
func (s *Stream) appendLocked(st logsv1.Stream, p []byte) {
	for len(p) > 0 {
		n := len(s.pending)
		if n == 0 || s.pending[n-1].stream != st || len(s.pending[n-1].data) == MaxChunk {
			s.pending = append(s.pending, segment{st, s.bufferLocked(len(p))})
			n++
		}
		last := &s.pending[n-1]
		k := min(len(p), MaxChunk-len(last.data))
		if len(last.data)+k > cap(last.data) {
			grown := make([]byte, len(last.data), min(MaxChunk, max(2*cap(last.data), len(last.data)+k)))
			copy(grown, last.data)
			last.data = grown
		}
		last.data = append(last.data, p[:k]...)
		p = p[k:]
	}
}

// bufferLocked returns an empty buffer for a new segment: an acknowledged
// chunk's, else a new one with room for n bytes, at least 4 KiB (a line at
// a time does not allocate a chunk each).
func (s *Stream) bufferLocked(n int) []byte {
	if k := len(s.free); k > 0 {
		b := s.free[k-1]
		s.free[k-1] = nil
		s.free = s.free[:k-1]
		return b
	}
	return make([]byte, 0, min(MaxChunk, max(n, 4<<10)))
}

// Opened waits for logship's first Opened answer and returns its
// next_sequence: one past the last chunk logship stores for this log (1 for a
// new log).
func (s *Stream) Opened(ctx context.Context) (uint64, error) {
	select {
	case <-s.opened:
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.firstSeq, nil
	case <-s.done:
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.err != nil {
			return 0, s.err
		}
		return 0, errors.New("logclient: the log ended before it was opened")
	case <-ctx.Done():
		return 0, fmt.Errorf("logclient: open: %w", ctx.Err())
	}
}

// Close sends what remains, ends the log and returns logship's Closed answer.
// It waits until ctx ends.
func (s *Stream) Close(ctx context.Context) (*logsv1.Closed, error) {
	s.mu.Lock()
	s.closing = true
	s.cond.Broadcast()
	s.mu.Unlock()
	select {
	case <-s.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("logclient: close: %w", ctx.Err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	return s.closed, nil
}

// cutLocked turns pending segments into chunks.
func (s *Stream) cutLocked() {
	now := s.opts.nowMs()
	for _, seg := range s.pending {
		for len(seg.data) > 0 {
			n := min(len(seg.data), MaxChunk)
			s.unacked = append(s.unacked, &logsv1.Chunk{Sequence: s.nextSeq, Stream: seg.stream, Data: seg.data[:n], TimeUnixMs: now})
			if s.opts.OnCut != nil {
				s.opts.OnCut(s.nextSeq, seg.stream, n)
			}
			s.nextSeq++
			seg.data = seg.data[n:]
		}
	}
	clear(s.pending)
	s.pending = s.pending[:0]
}

func (o Options) nowMs() int64 {
	if o.Now != nil {
		return o.Now().UnixMilli()
	}
	return time.Now().UnixMilli()
}

func (s *Stream) loop(ctx context.Context) {
	defer close(s.done)
	backoff := 100 * time.Millisecond
	for {
		closed, err := s.session(ctx)
		if closed != nil {
			s.mu.Lock()
			s.closed = closed
			s.cond.Broadcast()
			s.mu.Unlock()
			return
		}
		if ctx.Err() != nil {
			s.mu.Lock()
			s.err = fmt.Errorf("logclient: %w", context.Cause(ctx))
			s.cond.Broadcast()
			s.mu.Unlock()
			return
		}
		s.log.Warn("log stream to logship broke; reopening", "run_id", s.open.GetRunId(), "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// session runs one Ship stream until the log is closed (returns Closed) or the
// stream breaks (returns the error).
func (s *Stream) session(ctx context.Context) (*logsv1.Closed, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopWake := context.AfterFunc(sctx, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer stopWake()
	st, err := s.client.Ship(sctx, grpc.ForceCodecV2(s.codec))
	if err != nil {
		return nil, err
	}
	if err := st.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Open{Open: s.open}}); err != nil {
		return nil, err
	}
	first, err := st.Recv()
	if err != nil {
		return nil, err
	}
	opened := first.GetOpened()
	if opened == nil {
		return nil, errors.New("logship answered Open with something else than Opened")
	}
	s.mu.Lock()
	// No Send is in progress (sessions follow each other): every chunk's
	// buffer is free of gRPC; those below next_sequence are stored, and
	// this session sends none of them.
	s.sentThrough.Store(opened.GetNextSequence() - 1)
	// Everything below next_sequence is stored: drop it; resend the rest.
	s.ackLocked(opened.GetNextSequence() - 1)
	s.lastSend = opened.GetNextSequence() - 1
	// A log this process did not start (a run of an earlier life of the
	// executor): numbering goes on after what logship holds.
	if ns := opened.GetNextSequence(); ns > s.nextSeq {
		s.nextSeq = ns
	}
	select {
	case <-s.opened:
	default:
		s.firstSeq = opened.GetNextSequence()
		close(s.opened)
	}
	s.mu.Unlock()

	recvErr := make(chan error, 1)
	closedCh := make(chan *logsv1.Closed, 1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				recvErr <- err
				s.mu.Lock()
				s.cond.Broadcast()
				s.mu.Unlock()
				return
			}
			switch k := m.Kind.(type) {
			case *logsv1.ShipResponse_Ack:
				s.mu.Lock()
				s.ackLocked(k.Ack.GetThroughSequence())
				s.mu.Unlock()
			case *logsv1.ShipResponse_Closed:
				closedCh <- k.Closed
				return
			}
		}
	}()

	chunkReq := &logsv1.ShipRequest_Chunk{}
	req := &logsv1.ShipRequest{Kind: chunkReq}
	closeSent := false
	for {
		s.mu.Lock()
		for !s.sendableLocked(closeSent) && len(recvErr) == 0 && sctx.Err() == nil {
			s.cond.Wait()
		}
		if len(recvErr) > 0 || sctx.Err() != nil {
			s.mu.Unlock()
			select {
			case err := <-recvErr:
				return nil, err
			default:
				return nil, sctx.Err()
			}
		}
		s.cutLocked()
		var batch []*logsv1.Chunk
		for _, c := range s.unacked {
			if c.Sequence > s.lastSend {
				batch = append(batch, c)
			}
		}
		if n := len(batch); n > 0 {
			s.lastSend = batch[n-1].Sequence
		}
		last := s.nextSeq - 1
		sendClose := s.closing && !closeSent && len(s.pending) == 0
		s.mu.Unlock()

		for _, c := range batch {
			// Send marshals the message before it returns: one request
			// serves every chunk.
			chunkReq.Chunk = c
			if err := st.Send(req); err != nil {
				return nil, err
			}
			s.sentThrough.Store(c.Sequence)
		}
		chunkReq.Chunk = nil
		if sendClose {
			if err := st.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Close{Close: &logsv1.Close{LastSequence: last}}}); err != nil {
				return nil, err
			}
			closeSent = true
			select {
			case c := <-closedCh:
				return c, nil
			case err := <-recvErr:
				return nil, err
			case <-sctx.Done():
				return nil, sctx.Err()
			}
		}
	}
}

func (s *Stream) sendableLocked(closeSent bool) bool {
	if len(s.pending) > 0 {
		return true
	}
	for _, c := range s.unacked {
		if c.Sequence > s.lastSend {
			return true
		}
	}
	return s.closing && !closeSent
}

func (s *Stream) ackLocked(through uint64) {
	if through <= s.acked {
		return
	}
	s.acked = through
	sent := s.sentThrough.Load()
	i := 0
	for i < len(s.unacked) && s.unacked[i].Sequence <= through {
		c := s.unacked[i]
		s.size -= len(c.Data)
		if c.Sequence <= sent && cap(c.Data) == MaxChunk {
			s.free = append(s.free, c.Data[:0])
		}
		s.unacked[i] = nil
		i++
	}
	s.unacked = s.unacked[i:]
	if s.opts.OnAck != nil {
		s.opts.OnAck(through)
	}
	s.cond.Broadcast()
}
