package runlog

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/services/logship/internal/mask"
	"github.com/hangar-dev/hangar/services/logship/internal/spool"
)

// testRun is a Manager on a spool directory with one run open.
type testRun struct {
	t       *testing.T
	dir     string
	store   *memStore
	secrets []Secret
	m       *Manager
	s       *Session
	next    uint64
}

func openTestRun(t *testing.T, secrets ...string) *testRun {
	t.Helper()
	tr := &testRun{t: t, dir: t.TempDir(), store: &memStore{finals: map[string][]byte{}}}
	for i, s := range secrets {
		tr.secrets = append(tr.secrets, Secret{Name: fmt.Sprintf("S%d", i), Value: []byte(s)})
	}
	tr.start()
	return tr
}

// start (re)starts logship on the spool and (re)opens the run.
func (tr *testRun) start() {
	tr.t.Helper()
	sp, err := spool.Open(tr.dir)
	if err != nil {
		tr.t.Fatal(err)
	}
	tr.m, err = New(Options{Spool: sp, Store: tr.store, ChunkInterval: time.Hour, CloseWait: 5 * time.Second})
	if err != nil {
		tr.t.Fatal(err)
	}
	tr.s, tr.next, err = tr.m.Open(OpenRequest{RunID: "r", Secrets: tr.secrets})
	if err != nil {
		tr.t.Fatal(err)
	}
}

// restart stops logship (chunks not committed are lost) and starts it
// again.
func (tr *testRun) restart() {
	tr.t.Helper()
	tr.m.Close()
	tr.start()
}

// state returns the run's committed state.
func (tr *testRun) state() spool.State {
	r := tr.m.runs["r"]
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

func (tr *testRun) final() string {
	tr.store.mu.Lock()
	defer tr.store.mu.Unlock()
	return string(tr.store.finals["r"])
}

// streamPiece is a chunk's stream and data.
type streamPiece struct {
	stream Stream
	data   string
}

// modelLog is what logship must store for chunks: a masker per stream on
// the same set, writing into one log in arrival order, flushed at the end
// in the order stdout, stderr, system, none. It also returns each stream's
// own masked output.
func modelLog(t *testing.T, secrets []Secret, pieces []streamPiece) (string, map[Stream]string) {
	t.Helper()
	values := make([][]byte, len(secrets))
	for i, s := range secrets {
		values[i] = s.Value
	}
	set, _ := mask.NewSet(values, mask.Options{})
	var log bytes.Buffer
	var own [numStreams]bytes.Buffer
	var ws [numStreams]*mask.Writer
	for i := range ws {
		ws[i] = set.NewWriter(teeWriter{&log, &own[i]})
	}
	for _, p := range pieces {
		if _, err := ws[streamIndex(p.stream)].Write([]byte(p.data)); err != nil {
			t.Fatal(err)
		}
	}
	per := map[Stream]string{}
	for i, w := range ws {
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		per[streamOrder[i]] = own[i].String()
	}
	return log.String(), per
}

type teeWriter struct{ a, b *bytes.Buffer }

func (w teeWriter) Write(p []byte) (int, error) {
	w.a.Write(p)
	return w.b.Write(p)
}

// TestStreamsMaskedApart: a secret contiguous within one stream is masked
// whatever the other streams print between its parts; the point after a
// chunk is clean (acknowledged) only when no stream's masker holds
// anything back; held-back bytes come out after the other streams' bytes
// that arrived meanwhile.
func TestStreamsMaskedApart(t *testing.T) {
	const secret = "hunter2-correct-horse"
	type step struct {
		stream   Stream
		data     string
		wantAck  uint64
		wantSend bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
		want  string
	}{
		{"stderr between two stdout halves", []step{
			{StreamStdout, "start\n", 1, true},
			{StreamStdout, "password=hunter2-", 1, false},
			{StreamStderr, "+ echo x\n", 1, false},
			{StreamStdout, "correct-horse\n", 4, true},
		}, "start\npassword=+ echo x\n******\n"},
		{"system between two stdout halves", []step{
			{StreamStdout, "hunter2-", 0, false},
			{StreamSystem, "[hangar] phase apply\n", 0, false},
			{StreamStdout, "correct-horse done\n", 3, true},
		}, "[hangar] phase apply\n****** done\n"},
		{"three parts, stderr and system between", []step{
			{StreamStdout, "x hunter2-", 0, false},
			{StreamStderr, "+ step 2\n", 0, false},
			{StreamStdout, "correct", 0, false},
			{StreamSystem, "[hangar] still running\n", 0, false},
			{StreamStdout, "-horse y\n", 5, true},
		}, "x + step 2\n[hangar] still running\n****** y\n"},
		{"stderr split too, stdout between", []step{
			{StreamStderr, "E hunter2", 0, false},
			{StreamStdout, "out\n", 0, false},
			{StreamStderr, "-correct-horse E\n", 3, true},
		}, "E out\n****** E\n"},
		{"both streams split at once", []step{
			{StreamStdout, "o hunter2-co", 0, false},
			{StreamStderr, "e hunter2-cor", 0, false},
			{StreamStdout, "rrect-horse o\n", 0, false},
			{StreamStderr, "rect-horse e\n", 4, true},
		}, "o e ****** o\n****** e\n"},
		{"held fragment that is no secret comes out later", []step{
			{StreamStdout, "a hunte", 0, false},
			{StreamStderr, "x\n", 0, false},
			{StreamStdout, "rx b\n", 3, true},
		}, "a x\nhunterx b\n"},
		{"no stream", []step{
			{"", "hunter2-", 0, false},
			{StreamStdout, "o\n", 0, false},
			{"", "correct-horse\n", 3, true},
		}, "o\n******\n"},
		{"close flushes stdout, stderr, system in order", []step{
			{StreamSystem, "sys hunte", 0, false},
			{StreamStderr, "err hunter", 0, false},
			{StreamStdout, "out hunter2", 0, false},
		}, "sys err out hunter2hunterhunte"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := openTestRun(t, secret)
			defer tr.m.Close()
			var pieces []streamPiece
			for i, st := range tc.steps {
				ack, send, err := tr.s.Chunk(Chunk{Sequence: uint64(i + 1), Stream: st.stream, Data: []byte(st.data)})
				if err != nil {
					t.Fatalf("chunk %d: %v", i+1, err)
				}
				if send != st.wantSend || (send && ack != st.wantAck) {
					t.Fatalf("chunk %d: ack %d send %v, want ack %d send %v", i+1, ack, send, st.wantAck, st.wantSend)
				}
				pieces = append(pieces, streamPiece{st.stream, st.data})
			}
			if _, err := tr.s.Close(t.Context(), uint64(len(tc.steps))); err != nil {
				t.Fatal(err)
			}
			if got := tr.final(); got != tc.want {
				t.Errorf("final = %q, want %q", got, tc.want)
			}
			if model, _ := modelLog(t, tr.secrets, pieces); model != tc.want {
				t.Errorf("model = %q, want %q", model, tc.want)
			}
		})
	}
}

// TestStreamsRestartBetweenHalves: logship restarts while stdout holds the
// first half of a secret and stderr went on: neither chunk was
// acknowledged, the run resumes at the first half, and the log is as
// without the restart.
func TestStreamsRestartBetweenHalves(t *testing.T) {
	const secret = "hunter2-correct-horse"
	pieces := []streamPiece{
		{StreamStdout, "start\n"},
		{StreamStdout, "password=hunter2-"},
		{StreamStderr, "+ echo x\n"},
		{StreamSystem, "[hangar] x\n"},
		{StreamStdout, "correct-horse\n"},
		{StreamStderr, "done\n"},
	}
	for _, restartAfter := range []int{2, 3, 4} {
		t.Run(fmt.Sprint("restart after chunk ", restartAfter), func(t *testing.T) {
			tr := openTestRun(t, secret)
			for i, p := range pieces[:restartAfter] {
				if _, _, err := tr.s.Chunk(Chunk{Sequence: uint64(i + 1), Stream: p.stream, Data: []byte(p.data)}); err != nil {
					t.Fatal(err)
				}
			}
			tr.restart()
			defer tr.m.Close()
			if tr.next != 2 {
				t.Fatalf("next_sequence after the restart = %d, want 2", tr.next)
			}
			for i := tr.next; i <= uint64(len(pieces)); i++ {
				p := pieces[i-1]
				if _, _, err := tr.s.Chunk(Chunk{Sequence: i, Stream: p.stream, Data: []byte(p.data)}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := tr.s.Close(t.Context(), uint64(len(pieces))); err != nil {
				t.Fatal(err)
			}
			want := "start\npassword=+ echo x\n[hangar] x\n******\ndone\n"
			if got := tr.final(); got != want {
				t.Errorf("final = %q, want %q", got, want)
			}
		})
	}
}

// TestIdleStreamFlushed: a stream whose masker holds bytes back while it
// is silent does not hold acknowledgements back for ever: once
// idleFlushBytes came from other streams, its held bytes are written.
func TestIdleStreamFlushed(t *testing.T) {
	defer func(n int64) { idleFlushBytes = n }(idleFlushBytes)
	idleFlushBytes = 64
	tr := openTestRun(t, "hunter2-correct-horse")
	defer tr.m.Close()
	seq := uint64(1)
	if _, send, err := tr.s.Chunk(Chunk{Sequence: seq, Stream: StreamStdout, Data: []byte("prompt: hunter")}); err != nil || send {
		t.Fatalf("chunk 1: send %v, %v", send, err)
	}
	var want strings.Builder
	want.WriteString("prompt: ")
	for {
		seq++
		line := fmt.Sprintf("stderr line %d\n", seq)
		want.WriteString(line)
		ack, send, err := tr.s.Chunk(Chunk{Sequence: seq, Stream: StreamStderr, Data: []byte(line)})
		if err != nil {
			t.Fatal(err)
		}
		if send {
			if ack != seq {
				t.Fatalf("ack %d, want %d", ack, seq)
			}
			break
		}
		if seq > 20 {
			t.Fatal("stdout's held bytes hold acknowledgements back")
		}
	}
	if got := tr.state().MaskedBytes; got != int64(want.Len()+len("hunter")) {
		t.Errorf("committed %d bytes, want %d", got, want.Len()+len("hunter"))
	}
	seq++
	if _, _, err := tr.s.Chunk(Chunk{Sequence: seq, Stream: StreamStdout, Data: []byte("2 ok\n")}); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.s.Close(t.Context(), seq); err != nil {
		t.Fatal(err)
	}
	if got, want := tr.final(), want.String()+"hunter2 ok\n"; got != want {
		t.Errorf("final = %q, want %q", got, want)
	}
}

// Stream alphabets of FuzzStreamInterleaving: disjoint, so that the bytes
// of each stream can be picked out of the log; newline and the mask's '*'
// are shared and ignored.
var fuzzTokens = [3][]string{
	{"hunterxyz", "hunter", "xyz", "hu", "nterx", "ok ", "abc", "\n"}, // stdout: a-z and space
	{"PASSWORDQ", "PASS", "WORDQ", "PA", "+CMD", "EE", "\n"},          // stderr: A-Z and +
	{"9:8:7:6:5", "9:8", ":7:6", ":5", "1", "00", "\n"},               // system: digits and ':'
}

// fuzzSecrets are the run's secrets: one per stream alphabet.
var fuzzSecrets = []string{"hunterxyz", "PASSWORDQ", "9:8:7:6:5"}

func fuzzStreamOf(c byte) int {
	switch {
	case c >= 'a' && c <= 'z' || c == ' ':
		return 0
	case c >= 'A' && c <= 'Z' || c == '+':
		return 1
	case c >= '0' && c <= '9' || c == ':':
		return 2
	}
	return -1
}

// FuzzStreamInterleaving ships three streams' output cut into chunks and
// interleaved at random, committing after some chunks, with a restart of
// logship at a random point: whatever the interleaving, no secret that is
// contiguous within one stream survives, each stream's other bytes come
// through exactly and in order, and the log is exactly that of one masker
// per stream writing into one log (modelLog), with or without the
// restart.
//
// Inputs: each byte of text appends token (b/3) of stream b%3 to that
// stream's output; each byte c of cuts sends the next 1+(c/3)%16 bytes of
// stream c%3 as a chunk (Write only if c has its high bit, else Write and
// Commit); what remains is then sent in chunks of 5 bytes, stream after
// stream in turn. restart > 0 restarts logship after chunk restart.
func FuzzStreamInterleaving(f *testing.F) {
	f.Add([]byte{0, 1, 2}, []byte{3, 1, 3}, uint8(0))
	f.Add([]byte{0, 1, 0}, []byte{12, 1, 9, 2, 30}, uint8(2))
	f.Fuzz(func(t *testing.T, text, cuts []byte, restart uint8) {
		if len(text) > 200 || len(cuts) > 200 {
			return
		}
		var content [3]string
		for _, b := range text {
			s := int(b % 3)
			content[s] += fuzzTokens[s][int(b/3)%len(fuzzTokens[s])]
		}
		streams := [3]Stream{StreamStdout, StreamStderr, StreamSystem}
		type cut struct {
			piece  streamPiece
			commit bool
		}
		var chunks []cut
		var rest [3]string
		copy(rest[:], content[:])
		for _, c := range cuts {
			s := int(c%0x80) % 3
			n := min(1+int(c%0x80/3)%16, len(rest[s]))
			if n == 0 {
				continue
			}
			chunks = append(chunks, cut{streamPiece{streams[s], rest[s][:n]}, c&0x80 == 0})
			rest[s] = rest[s][n:]
		}
		for rest[0] != "" || rest[1] != "" || rest[2] != "" {
			for s := range rest {
				if n := min(5, len(rest[s])); n > 0 {
					chunks = append(chunks, cut{streamPiece{streams[s], rest[s][:n]}, true})
					rest[s] = rest[s][n:]
				}
			}
		}

		tr := openTestRun(t, fuzzSecrets...)
		send := func(from, to uint64) {
			for i := from; i <= to; i++ {
				c := chunks[i-1]
				ch := Chunk{Sequence: i, Stream: c.piece.stream, Data: []byte(c.piece.data)}
				var err error
				if c.commit {
					_, _, err = tr.s.Chunk(ch)
				} else {
					_, _, err = tr.s.Write(ch)
				}
				if err != nil {
					t.Fatalf("chunk %d: %v", i, err)
				}
			}
		}
		last := uint64(len(chunks))
		if r := uint64(restart); r > 0 && r <= last {
			send(1, r)
			acked := tr.state().AckedSequence
			tr.restart()
			if tr.next != acked+1 {
				t.Fatalf("next_sequence after the restart = %d, want %d", tr.next, acked+1)
			}
		}
		defer tr.m.Close()
		send(tr.next, last)
		if _, err := tr.s.Close(t.Context(), last); err != nil {
			t.Fatal(err)
		}
		got := tr.final()

		pieces := make([]streamPiece, len(chunks))
		for i, c := range chunks {
			pieces[i] = c.piece
		}
		model, per := modelLog(t, tr.secrets, pieces)
		if got != model {
			t.Fatalf("log %q\nwant %q (one masker per stream)", got, model)
		}
		for _, sec := range fuzzSecrets {
			if strings.Contains(got, sec) {
				t.Fatalf("secret %q survives in %q", sec, got)
			}
		}
		// Each stream's bytes, in order: its own masked output, which is
		// its input with the secrets masked.
		var picked [3]strings.Builder
		for i := range len(got) {
			if s := fuzzStreamOf(got[i]); s >= 0 {
				picked[s].WriteByte(got[i])
			}
		}
		for s := range 3 {
			want := content[s]
			for _, sec := range fuzzSecrets {
				want = strings.ReplaceAll(want, sec, "*")
			}
			want = strings.Map(func(r rune) rune {
				if r < 0x80 && fuzzStreamOf(byte(r)) == s {
					return r
				}
				return -1
			}, want)
			if picked[s].String() != want {
				t.Fatalf("stream %s: bytes %q in the log, want %q (input %q)", streams[s], picked[s].String(), want, content[s])
			}
			for _, sec := range fuzzSecrets {
				if strings.Contains(per[streams[s]], sec) {
					t.Fatalf("stream %s: secret %q survives in its output %q", streams[s], sec, per[streams[s]])
				}
			}
		}
		if strings.Count(got, "\n") != strings.Count(content[0]+content[1]+content[2], "\n") {
			t.Fatalf("newlines lost or added: %q", got)
		}
	})
}
