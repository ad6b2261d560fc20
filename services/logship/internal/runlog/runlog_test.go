package runlog

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/services/logship/internal/s3log"
	"github.com/hangar-dev/hangar/services/logship/internal/spool"
)

// memStore keeps final objects in memory; S3 itself is exercised by the
// ship package's tests over a real socket.
type memStore struct {
	mu     sync.Mutex
	finals map[string][]byte
}

func (m *memStore) PutChunk(context.Context, string, uint64, io.ReadSeeker, int64) error { return nil }
func (m *memStore) PutFinal(_ context.Context, runID string, body io.ReadSeeker, _ s3log.Final) error {
	b, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.finals[runID] = b
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
