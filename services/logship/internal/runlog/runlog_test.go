package runlog

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/services/logship/internal/s3log"
	"github.com/hangar-dev/hangar/services/logship/internal/spool"
)

// memStore keeps objects in memory, with S3's precondition on final
// objects; S3 itself is exercised by the ship package's tests over a real
// socket.
type memStore struct {
	mu     sync.Mutex
	finals map[string][]byte
	meta   map[string]s3log.Final
	chunks map[string]map[uint64][]byte
	// statErr, if set, is StatFinal's answer (S3 unreachable).
	statErr error
}

func (m *memStore) PutChunk(_ context.Context, runID string, n uint64, body io.ReadSeeker, _ int64) (string, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.chunks == nil {
		m.chunks = map[string]map[uint64][]byte{}
	}
	if m.chunks[runID] == nil {
		m.chunks[runID] = map[uint64][]byte{}
	}
	m.chunks[runID][n] = b
	return "", nil
}

func (m *memStore) PutFinal(_ context.Context, runID string, body io.ReadSeeker, f s3log.Final) error {
	b, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.finals[runID]; ok {
		return s3log.ErrFinalExists
	}
	m.finals[runID] = b
	if m.meta == nil {
		m.meta = map[string]s3log.Final{}
	}
	m.meta[runID] = f
	return nil
}

func (m *memStore) StatFinal(_ context.Context, runID string) (s3log.Final, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.statErr != nil {
		return s3log.Final{}, m.statErr
	}
	if _, ok := m.finals[runID]; !ok {
		return s3log.Final{}, s3log.ErrNotFound
	}
	return m.meta[runID], nil
}

func (m *memStore) DeleteChunks(_ context.Context, runID string, n uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := uint64(1); i <= n; i++ {
		delete(m.chunks[runID], i)
	}
	return nil
}

func (m *memStore) FinalKey(runID string) string { return "runs/" + runID + "/log" }

// TestAckOnlyAtCleanPoints: a chunk is acknowledged only when the masker
// holds none of its bytes back.
func TestAckOnlyAtCleanPoints(t *testing.T) {
	const secret = "abcdef123"
	type step struct {
		data     string
		wantAck  uint64
		wantSend bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
		want  string
	}{
		{"plain lines", []step{{"x\n", 1, true}, {"y\n", 2, true}}, "x\ny\n"},
		{"chunk ends with a secret's prefix", []step{{"x abc", 0, false}, {"def123 y\n", 2, true}}, "x ****** y\n"},
		{"chunk ends with a whole secret", []step{{"abcdef123", 0, false}, {"\n", 2, true}}, "******\n"},
		{"prefix that turns out not to be a secret", []step{{"1 abcd", 0, false}, {"zz\n", 2, true}}, "1 abcdzz\n"},
		{"close while held", []step{{"ok\n", 1, true}, {"tail abcdef1", 1, false}}, "ok\ntail abcdef1"},
		{"one byte at a time", []step{{"a", 0, false}, {"b", 0, false}, {"c", 0, false}, {"d", 0, false},
			{"e", 0, false}, {"f", 0, false}, {"1", 0, false}, {"2", 0, false}, {"3", 0, false}, {"!", 10, true}}, "******!"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp, err := spool.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			store := &memStore{finals: map[string][]byte{}}
			m, err := New(Options{Spool: sp, Store: store, ChunkInterval: time.Hour, CloseWait: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			s, next, err := m.Open(OpenRequest{RunID: "r", Secrets: []Secret{{Name: "S", Value: []byte(secret)}}})
			if err != nil || next != 1 {
				t.Fatalf("Open = %d, %v", next, err)
			}
			for i, st := range tc.steps {
				ack, send, err := s.Chunk(Chunk{Sequence: uint64(i + 1), Data: []byte(st.data)})
				if err != nil {
					t.Fatalf("chunk %d: %v", i+1, err)
				}
				if send != st.wantSend || (send && ack != st.wantAck) {
					t.Fatalf("chunk %d: ack %d send %v, want ack %d send %v", i+1, ack, send, st.wantAck, st.wantSend)
				}
			}
			closed, err := s.Close(t.Context(), uint64(len(tc.steps)))
			if err != nil {
				t.Fatal(err)
			}
			if closed.Bytes != int64(len(tc.want)) {
				t.Errorf("Closed.Bytes = %d, want %d", closed.Bytes, len(tc.want))
			}
			store.mu.Lock()
			got := string(store.finals["r"])
			store.mu.Unlock()
			if got != tc.want {
				t.Errorf("final = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestCommitWhileWriting: commits run while chunks are being written (as
// the Ship handler's committer does); after a restart the run resumes one
// past the last acknowledged chunk, and the log holds every chunk exactly
// once, masked, even with secrets split across chunks.
func TestCommitWhileWriting(t *testing.T) {
	const secret = "split-secret-42"
	var chunks []string
	var raw strings.Builder
	for i := range 400 {
		c := fmt.Sprintf("line %d %s\n", i, secret)
		if i%7 == 3 { // end inside the secret: no clean point here
			c = fmt.Sprintf("line %d split-sec", i)
		}
		if i%7 == 4 {
			c = fmt.Sprintf("ret-42 %d\n", i)
		}
		chunks = append(chunks, c)
		raw.WriteString(c)
	}
	dir := t.TempDir()
	store := &memStore{finals: map[string][]byte{}}
	open := func() (*Manager, *Session, uint64) {
		sp, err := spool.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		m, err := New(Options{Spool: sp, Store: store, ChunkInterval: time.Hour, CloseWait: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		s, next, err := m.Open(OpenRequest{RunID: "r", Secrets: []Secret{{Name: "S", Value: []byte(secret)}}})
		if err != nil {
			t.Fatal(err)
		}
		return m, s, next
	}
	m, s, next := open()
	var acked atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			through, send, err := s.Commit()
			if err != nil {
				t.Error(err)
				return
			}
			if send {
				acked.Store(through)
			}
			select {
			case <-stop:
				// The writes may all have gone by during one commit
				// (the spool writes behind): stop once one covered some.
				if acked.Load() > 0 {
					return
				}
			default:
			}
		}
	}()
	for i := next; i <= 300; i++ {
		if _, _, err := s.Write(Chunk{Sequence: i, Data: []byte(chunks[i-1])}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	<-done
	last := acked.Load()
	if last == 0 || last > 300 {
		t.Fatalf("acked %d", last)
	}
	m.Close() // chunks after the last commit are dropped

	m, s, next = open()
	defer m.Close()
	if next != last+1 {
		t.Fatalf("next_sequence after restart = %d, want %d", next, last+1)
	}
	for i := next; i <= uint64(len(chunks)); i++ {
		if _, _, err := s.Write(Chunk{Sequence: i, Data: []byte(chunks[i-1])}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Close(t.Context(), uint64(len(chunks))); err != nil {
		t.Fatal(err)
	}
	want := strings.ReplaceAll(raw.String(), secret, "******")
	store.mu.Lock()
	got := string(store.finals["r"])
	store.mu.Unlock()
	if got != want {
		t.Errorf("final log differs from the masked input (%d bytes, want %d)", len(got), len(want))
	}
}
