package runlog

import (
	"bytes"
	"fmt"
	"sort"
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

// modelLog is what logship must store for chunks, written as plainly as
// possible: a masker per stream on the same set; a chunk of the system
// stream first flushes the other streams' maskers (in the order of their
// last chunks); the maskers' output is merged in arrival order, a newline
// ending one stream's open line before another stream's bytes; a last
// masker runs over the merged log; at the end the streams' maskers are
// flushed in the order of their last chunks, then the last one. It also
// returns each stream's own masked output.
func modelLog(t *testing.T, secrets []Secret, pieces []streamPiece) (string, map[Stream]string) {
	t.Helper()
	values := make([][]byte, len(secrets))
	for i, s := range secrets {
		values[i] = s.Value
	}
	set, _ := mask.NewSet(values, mask.Options{})
	var log bytes.Buffer
	last := set.NewWriter(&log)
	owner := -1
	var own [numStreams]bytes.Buffer
	var ws [numStreams]*mask.Writer
	for i := range ws {
		ws[i] = set.NewWriter(modelMerge{i, &owner, last, &own[i]})
	}
	var lastPiece [numStreams]int
	flushOthers := func(except int) {
		order := []int{}
		for i := range ws {
			if i != except && lastPiece[i] > 0 {
				order = append(order, i)
			}
		}
		sort.Slice(order, func(a, b int) bool { return lastPiece[order[a]] < lastPiece[order[b]] })
		for _, i := range order {
			if err := ws[i].Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for n, p := range pieces {
		i := streamIndex(p.stream)
		if i == idxSystem {
			flushOthers(idxSystem)
		}
		if _, err := ws[i].Write([]byte(p.data)); err != nil {
			t.Fatal(err)
		}
		lastPiece[i] = n + 1
	}
	flushOthers(-1)
	if err := last.Close(); err != nil {
		t.Fatal(err)
	}
	per := map[Stream]string{}
	for i := range ws {
		per[streamOrder[i]] = own[i].String()
	}
	return log.String(), per
}

// modelMerge is modelLog's merge of stream i's masked output.
type modelMerge struct {
	i     int
	owner *int
	last  *mask.Writer
	own   *bytes.Buffer
}

func (w modelMerge) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	w.own.Write(p)
	if *w.owner >= 0 && *w.owner != w.i {
		if _, err := w.last.Write([]byte("\n")); err != nil {
			return 0, err
		}
	}
	*w.owner = w.i
	if p[len(p)-1] == '\n' {
		*w.owner = -1
	}
	return w.last.Write(p)
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
		}, "start\npassword=\n+ echo x\n******\n"},
		{"a system line is a boundary: what stdout held comes before it", []step{
			{StreamStdout, "hunter2-", 0, false},
			{StreamSystem, "[hangar] phase apply\n", 2, true},
			{StreamStdout, "correct-horse done\n", 3, true},
		}, "hunter2-\n[hangar] phase apply\ncorrect-horse done\n"},
		{"three parts, stderr between", []step{
			{StreamStdout, "x hunter2-", 0, false},
			{StreamStderr, "+ step 2\n", 0, false},
			{StreamStdout, "correct", 0, false},
			{StreamStderr, "+ step 3\n", 0, false},
			{StreamStdout, "-horse y\n", 5, true},
		}, "x \n+ step 2\n+ step 3\n****** y\n"},
		{"footer last", []step{
			{StreamStdout, "out hunter2", 0, false},
			{StreamStderr, "err hunter", 0, false},
			{StreamSystem, "\n[hangar] run r: finished (exit code 0)\n", 3, true},
		}, "out \nerr \nhunter2\nhunter\n\n[hangar] run r: finished (exit code 0)\n"},
		{"stderr split too, stdout between", []step{
			{StreamStderr, "E hunter2", 0, false},
			{StreamStdout, "out\n", 0, false},
			{StreamStderr, "-correct-horse E\n", 3, true},
		}, "E \nout\n****** E\n"},
		{"both streams split at once", []step{
			{StreamStdout, "o hunter2-co", 0, false},
			{StreamStderr, "e hunter2-cor", 0, false},
			{StreamStdout, "rrect-horse o\n", 0, false},
			{StreamStderr, "rect-horse e\n", 4, true},
		}, "o \ne \n****** o\n****** e\n"},
		{"held fragment that is no secret comes out later", []step{
			{StreamStdout, "a hunte", 0, false},
			{StreamStderr, "x\n", 0, false},
			{StreamStdout, "rx b\n", 3, true},
		}, "a \nx\nhunterx b\n"},
		{"no stream", []step{
			{"", "hunter2-", 0, false},
			{StreamStdout, "o\n", 0, false},
			{"", "correct-horse\n", 3, true},
		}, "o\n******\n"},
		{"close flushes in the order of the streams' last chunks", []step{
			{StreamSystem, "sys hunte", 0, false},
			{StreamStderr, "err hunter", 0, false},
			{StreamStdout, "out hunter2", 0, false},
		}, "sys \nerr \nout \nhunte\nhunter\nhunter2"},
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
		{StreamStderr, "+ echo y\n"},
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
			want := "start\npassword=\n+ echo x\n+ echo y\n******\ndone\n"
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
	// stderr's first line ends stdout's open line; after five stderr
	// lines (70 bytes > 64) stdout's "hunter" is flushed into the merged
	// log, where the last pass holds it (it could begin the secret there)
	// until stderr's next line: only then is the run clean again.
	for {
		seq++
		line := fmt.Sprintf("stderr line %d\n", seq)
		ack, send, err := tr.s.Chunk(Chunk{Sequence: seq, Stream: StreamStderr, Data: []byte(line)})
		if err != nil {
			t.Fatal(err)
		}
		if send {
			if ack != seq || seq != 7 {
				t.Fatalf("ack %d at chunk %d, want 7 at 7", ack, seq)
			}
			break
		}
		if seq > 20 {
			t.Fatal("stdout's held bytes hold acknowledgements back")
		}
	}
	want := "prompt: \nstderr line 2\nstderr line 3\nstderr line 4\nstderr line 5\nstderr line 6\nhunter\nstderr line 7\n"
	if got := tr.state().MaskedBytes; got != int64(len(want)) {
		t.Errorf("committed %d bytes, want %d", got, len(want))
	}
	seq++
	if _, _, err := tr.s.Chunk(Chunk{Sequence: seq, Stream: StreamStdout, Data: []byte("2 ok\n")}); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.s.Close(t.Context(), seq); err != nil {
		t.Fatal(err)
	}
	if got, want := tr.final(), want+"2 ok\n"; got != want {
		t.Errorf("final = %q, want %q", got, want)
	}
}

// withSecretsDropped reports whether got is want with some occurrences of
// secrets removed.
func withSecretsDropped(want, got string, secrets []string) bool {
	memo := map[[2]int]bool{}
	var ok func(i, j int) bool
	ok = func(i, j int) bool {
		if i == len(want) {
			return j == len(got)
		}
		k := [2]int{i, j}
		if v, seen := memo[k]; seen {
			return v
		}
		v := j < len(got) && want[i] == got[j] && ok(i+1, j+1)
		for _, sec := range secrets {
			if !v && strings.HasPrefix(want[i:], sec) {
				v = ok(i+len(sec), j)
			}
		}
		memo[k] = v
		return v
	}
	return ok(0, 0)
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
// logship at a random point: whatever the interleaving, no secret
// survives, each stream's bytes come through exactly and in order (as its
// own masker put them out), no line holds bytes of two streams, and the
// log is exactly modelLog's, with or without the restart.
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
		// Each stream's bytes, in order: its own masked output, with what
		// the last pass masked (a secret whose parts a system line's flush
		// let through, put together again) masked.
		var picked [3]strings.Builder
		for i := range len(got) {
			if s := fuzzStreamOf(got[i]); s >= 0 {
				picked[s].WriteByte(got[i])
			}
		}
		for s := range 3 {
			own := strings.Map(func(r rune) rune {
				if r < 0x80 && fuzzStreamOf(byte(r)) == s {
					return r
				}
				return -1
			}, per[streams[s]])
			if !withSecretsDropped(own, picked[s].String(), fuzzSecrets) {
				t.Fatalf("stream %s: bytes %q in the log %q, want %q less some secrets (input %q)", streams[s], picked[s].String(), got, own, content[s])
			}
		}
		// No line holds bytes of two streams.
		for _, line := range strings.Split(got, "\n") {
			owner := -1
			for i := range len(line) {
				if s := fuzzStreamOf(line[i]); s >= 0 {
					if owner >= 0 && s != owner {
						t.Fatalf("line %q mixes streams, in %q", line, got)
					}
					owner = s
				}
			}
		}
		if strings.Count(got, "\n") < strings.Count(content[0]+content[1]+content[2], "\n") {
			t.Fatalf("newlines lost: %q", got)
		}
	})
}

// TestMergedLogMasked: what forms only once the streams are merged is
// masked by the last pass, and a secret whose halves went to stdout and
// stderr is never joined into one piece (the log once joined a partial
// stdout line to a stderr line).
func TestMergedLogMasked(t *testing.T) {
	defer func(n int64) { idleFlushBytes = n }(idleFlushBytes)
	idleFlushBytes = 16
	for _, tc := range []struct {
		name   string
		secret string
		pieces []streamPiece
		notice string // the log's first line
		want   string
		idle   bool // a stream's masker is flushed as idle (modelLog does not)
	}{
		{
			// The value's lines are too short to be masked alone; whole, it
			// only exists in the merged log.
			name:   "multi-line value across streams",
			secret: "abc\ndef",
			pieces: []streamPiece{{StreamStdout, "abc\n"}, {StreamSystem, "def\n"}},
			// The user is told the lines are not masked one by one.
			notice: "[hangar] encodings not masked in this log (shorter than 6 bytes): S0 (line by line, wrapped within the first 3 characters)\n",
			want:   "******\n",
		},
		{
			name:   "halves on stdout and stderr",
			secret: "hunter2-correct-horse",
			pieces: []streamPiece{{StreamStdout, "hunter2-"}, {StreamStderr, "0123456789abcdefgh\n"}, {StreamStderr, "correct-horse\n"}},
			want:   "0123456789abcdefgh\nhunter2-\ncorrect-horse\n",
			idle:   true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := openTestRun(t, tc.secret)
			defer tr.m.Close()
			for i, p := range tc.pieces {
				if _, _, err := tr.s.Chunk(Chunk{Sequence: uint64(i + 1), Stream: p.stream, Data: []byte(p.data)}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := tr.s.Close(t.Context(), uint64(len(tc.pieces))); err != nil {
				t.Fatal(err)
			}
			got := tr.final()
			if got != tc.notice+tc.want {
				t.Errorf("final = %q, want %q", got, tc.notice+tc.want)
			}
			if strings.Contains(got, tc.secret) {
				t.Errorf("the secret is whole in %q", got)
			}
			if model, _ := modelLog(t, tr.secrets, tc.pieces); !tc.idle && model != tc.want {
				t.Errorf("model = %q, want %q", model, tc.want)
			}
		})
	}
}

// TestLogReadsInArrivalOrder: chunks that arrive in a terminal's order
// (each "+ command" trace on stderr before the command's output on stdout)
// are stored in that order, a line ending in a secret included (nothing
// is held after the mask); a prompt without a newline is stored (and
// shown) at once, before any other output, and the next stream's line
// starts on a line of its own.
func TestLogReadsInArrivalOrder(t *testing.T) {
	tr := openTestRun(t, "s3cr3t-Tok3n-XYZ123456")
	defer tr.m.Close()
	pieces := []streamPiece{
		{StreamSystem, "[hangar] phase perform\n"},
		{StreamStderr, "+ echo calling\n"},
		{StreamStdout, "calling the API with s3cr3t-Tok3n-XYZ123456\n"},
		{StreamStderr, "+ echo done\n"},
		{StreamStdout, "done\n"},
		{StreamStderr, "+ read -p 'Password: ' p\n"},
		{StreamStdout, "Password: "},
	}
	for i, p := range pieces {
		ack, send, err := tr.s.Chunk(Chunk{Sequence: uint64(i + 1), Stream: p.stream, Data: []byte(p.data)})
		if err != nil || !send || ack != uint64(i+1) {
			t.Fatalf("chunk %d (%q): ack %d send %v err %v; want it stored and acknowledged at once", i+1, p.data, ack, send, err)
		}
	}
	want := "[hangar] phase perform\n+ echo calling\ncalling the API with ******\n+ echo done\ndone\n+ read -p 'Password: ' p\nPassword: "
	if got := tr.state().MaskedBytes; got != int64(len(want)) {
		t.Errorf("committed %d bytes, want the prompt committed too (%d)", got, len(want))
	}
	seq := uint64(len(pieces))
	for _, p := range []streamPiece{{StreamStderr, "warning: no tty\n"}, {StreamSystem, "\n[hangar] run r: finished (exit code 0)\n"}} {
		seq++
		if _, _, err := tr.s.Chunk(Chunk{Sequence: seq, Stream: p.stream, Data: []byte(p.data)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tr.s.Close(t.Context(), seq); err != nil {
		t.Fatal(err)
	}
	want += "\nwarning: no tty\n\n[hangar] run r: finished (exit code 0)\n"
	if got := tr.final(); got != want {
		t.Errorf("final = %q, want %q", got, want)
	}
}
