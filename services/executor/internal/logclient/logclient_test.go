package logclient

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
)

// store is the counterpart of the Ship contract as logship implements it
// (logship is another service and is exercised for real by the end-to-end tests):
// it stores chunks once by sequence number, refuses gaps, and can break a stream
// after a given number of chunks to force a reopen.
type store struct {
	logsv1.UnimplementedLogServiceServer
	mu        sync.Mutex
	data      bytes.Buffer
	next      uint64
	breakIn   int // break the stream after this many chunks (0: never)
	opens     int
	gate      chan struct{} // when set, Opened waits until it is closed
	closeSeen bool
}

func (s *store) Ship(st logsv1.LogService_ShipServer) error {
	m, err := st.Recv()
	if err != nil {
		return err
	}
	if m.GetOpen() == nil {
		return status.Error(codes.FailedPrecondition, "first message must be Open")
	}
	s.mu.Lock()
	s.opens++
	if s.next == 0 {
		s.next = 1
	}
	next := s.next
	s.mu.Unlock()
	if s.gate != nil {
		<-s.gate
	}
	if err := st.Send(&logsv1.ShipResponse{Kind: &logsv1.ShipResponse_Opened{Opened: &logsv1.Opened{NextSequence: next}}}); err != nil {
		return err
	}
	n := 0
	for {
		m, err := st.Recv()
		if err != nil {
			return err
		}
		switch k := m.Kind.(type) {
		case *logsv1.ShipRequest_Chunk:
			s.mu.Lock()
			c := k.Chunk
			switch {
			case c.Sequence < s.next: // resend: stored once
			case c.Sequence == s.next:
				s.data.Write(c.Data)
				s.next++
			default:
				s.mu.Unlock()
				return status.Errorf(codes.OutOfRange, "gap: got %d, want %d", c.Sequence, s.next)
			}
			through := s.next - 1
			n++
			brk := s.breakIn > 0 && n >= s.breakIn
			if brk {
				s.breakIn = 0
			}
			s.mu.Unlock()
			if brk {
				return status.Error(codes.Unavailable, "simulated logship restart")
			}
			if err := st.Send(&logsv1.ShipResponse{Kind: &logsv1.ShipResponse_Ack{Ack: &logsv1.Ack{ThroughSequence: through}}}); err != nil {
				return err
			}
		case *logsv1.ShipRequest_Close:
			s.mu.Lock()
			s.closeSeen = true
			size := s.data.Len()
			s.mu.Unlock()
			return st.Send(&logsv1.ShipResponse{Kind: &logsv1.ShipResponse_Closed{Closed: &logsv1.Closed{LogKey: "runs/x/log", Bytes: uint64(size)}}})
		}
	}
}

func serveStore(t *testing.T, s *store) logsv1.LogServiceClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	logsv1.RegisterLogServiceServer(srv, s)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return logsv1.NewLogServiceClient(conn)
}

func TestStreamDeliversEverythingInOrderAcrossBreaks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		breakIn int
		writes  int
		size    int
	}{
		{"no break", 0, 200, 100},
		{"break after 3 chunks", 3, 200, 1000},
		{"large writes split into chunks", 2, 10, 3 * MaxChunk},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &store{breakIn: tc.breakIn}
			c := serveStore(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			st := Open(ctx, c, &logsv1.Open{RunId: "r1"}, Options{MaxUnacked: 4 * MaxChunk})
			var want bytes.Buffer
			out, errw := st.Writer(logsv1.Stream_STREAM_STDOUT), st.Writer(logsv1.Stream_STREAM_STDERR)
			for i := 0; i < tc.writes; i++ {
				line := bytes.Repeat([]byte{byte('a' + i%26)}, tc.size)
				line = append(line, fmt.Sprintf(" %d\n", i)...)
				w := out
				if i%3 == 0 {
					w = errw
				}
				if _, err := w.Write(line); err != nil {
					t.Fatal(err)
				}
				want.Write(line)
			}
			closed, err := st.Close(ctx)
			if err != nil {
				t.Fatal(err)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if !bytes.Equal(s.data.Bytes(), want.Bytes()) {
				t.Fatalf("stored %d bytes, want %d identical bytes", s.data.Len(), want.Len())
			}
			if closed.GetBytes() != uint64(want.Len()) {
				t.Fatalf("closed says %d bytes", closed.GetBytes())
			}
			if tc.breakIn > 0 && s.opens < 2 {
				t.Fatalf("the stream was opened %d times; the break should force a reopen", s.opens)
			}
		})
	}
}

func TestWriteFailsOnceContextEnds(t *testing.T) {
	// Nothing listens: the stream can never open.
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	st := Open(ctx, logsv1.NewLogServiceClient(conn), &logsv1.Open{RunId: "r"}, Options{MaxUnacked: 10})
	if _, err := st.Writer(logsv1.Stream_STREAM_STDOUT).Write([]byte("0123456789ab")); err != nil {
		t.Fatal(err) // buffered: the first write is accepted
	}
	done := make(chan error, 1)
	go func() {
		_, err := st.Writer(logsv1.Stream_STREAM_STDOUT).Write([]byte("more"))
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a write beyond the bound after the context ended must fail")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("writer stayed blocked after the context ended")
	}
}

func TestStreamContinuesALogStartedByAnEarlierProcess(t *testing.T) {
	// Logship already holds chunks 1..4 of this run (written by an executor
	// that died); a new process appends a note and closes the log.
	s := &store{next: 5}
	s.data.WriteString("earlier output\n")
	c := serveStore(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st := Open(ctx, c, &logsv1.Open{RunId: "r1"}, Options{})
	st.Writer(logsv1.Stream_STREAM_SYSTEM).Write([]byte("the executor stopped\n"))
	closed, err := st.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if got := s.data.String(); got != "earlier output\nthe executor stopped\n" || closed.GetBytes() != uint64(len(got)) {
		t.Fatalf("log = %q", got)
	}
}

// TestChunksAreFull: output written while the stream cannot send (logship
// has not answered yet) is cut into full chunks of MaxChunk bytes whatever
// the sizes of the writes, the last one excepted, and arrives unchanged.
func TestChunksAreFull(t *testing.T) {
	s := &store{gate: make(chan struct{})}
	c := serveStore(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	var sizes []int
	st := Open(ctx, c, &logsv1.Open{RunId: "r1"}, Options{OnCut: func(_ uint64, _ logsv1.Stream, n int) {
		mu.Lock()
		sizes = append(sizes, n)
		mu.Unlock()
	}})
	var want bytes.Buffer
	w := st.Writer(logsv1.Stream_STREAM_STDOUT)
	for i, n := range []int{65536, 100, 30000, 7, 65536, 65536, 1, 40000, 3} {
		p := bytes.Repeat([]byte{byte('a' + i)}, n)
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
		want.Write(p)
	}
	close(s.gate)
	if _, err := st.Close(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, n := range sizes {
		if i < len(sizes)-1 && n != MaxChunk || n > MaxChunk {
			t.Fatalf("chunk sizes %v: want %d but for the last", sizes, MaxChunk)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !bytes.Equal(s.data.Bytes(), want.Bytes()) {
		t.Fatalf("stored %d bytes, want %d identical bytes", s.data.Len(), want.Len())
	}
}

// TestAcknowledgedBuffersAreReused: a chunk's buffer, once the chunk is
// sent and acknowledged, takes the next output: writing at the rate of the
// acknowledgements allocates no chunk buffer. A chunk acknowledged before
// its Send returned (what a server acknowledges unsent) is not reused: gRPC
// may still be reading it.
func TestAcknowledgedBuffersAreReused(t *testing.T) {
	s := &Stream{opts: Options{MaxUnacked: 8 << 20}, nextSeq: 1}
	s.cond = sync.NewCond(&s.mu)
	full := bytes.Repeat([]byte{'x'}, MaxChunk)
	for range 3 {
		s.appendLocked(logsv1.Stream_STREAM_STDOUT, full)
	}
	s.cutLocked()
	first, second, third := s.unacked[0].Data, s.unacked[1].Data, s.unacked[2].Data
	s.sentThrough.Store(2) // chunk 3 is still being sent
	s.ackLocked(3)
	if len(s.free) != 2 {
		t.Fatalf("%d buffers free after chunks 1-2 were sent and 1-3 acknowledged, want 2", len(s.free))
	}
	s.appendLocked(logsv1.Stream_STREAM_STDOUT, []byte("next"))
	s.appendLocked(logsv1.Stream_STREAM_STDERR, []byte("other stream"))
	s.cutLocked()
	a, b := s.unacked[0].Data, s.unacked[1].Data
	if &a[:1][0] != &second[:1][0] || &b[:1][0] != &first[:1][0] {
		t.Fatal("the next chunks did not take the acknowledged chunks' buffers")
	}
	if string(a) != "next" || string(b) != "other stream" {
		t.Fatalf("chunks %q, %q", a, b)
	}
	_ = third

	// In a steady flow (written, cut, sent, acknowledged), a chunk costs
	// its Chunk message, not its buffer.
	allocs := testing.AllocsPerRun(200, func() {
		s.appendLocked(logsv1.Stream_STREAM_STDOUT, full)
		s.cutLocked()
		s.sentThrough.Store(s.nextSeq - 1)
		s.ackLocked(s.nextSeq - 1)
	})
	if allocs > 1 {
		t.Fatalf("%v allocations per chunk, want at most 1 (its Chunk)", allocs)
	}
}
