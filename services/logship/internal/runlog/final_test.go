package runlog

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hangar-dev/hangar/services/logship/internal/s3log"
	"github.com/hangar-dev/hangar/services/logship/internal/s3test"
	"github.com/hangar-dev/hangar/services/logship/internal/spool"
)

const mib = 1 << 20

// s3Env is logship's run logs (a Manager on a spool in a temporary
// directory) with a real S3 API: gofakes3 on a loopback socket, with live
// chunks of 6 MiB (one more than S3's smallest part).
type s3Env struct {
	t        *testing.T
	dir      string
	s3       *s3test.Server
	reg      *prometheus.Registry
	store    *s3log.Store
	m        *Manager
	s        *Session
	interval time.Duration
	data     []byte // what was written, in order
	seq      uint64
}

func newS3Env(t *testing.T, interval time.Duration) *s3Env {
	e := &s3Env{t: t, dir: t.TempDir(), s3: s3test.Start(t), interval: interval}
	e.start()
	return e
}

// start (re)starts logship on the spool and (re)opens run "r".
func (e *s3Env) start() {
	e.t.Helper()
	e.reg = prometheus.NewRegistry()
	var err error
	e.store, err = s3log.New(e.s3.Client(), s3test.Bucket, "runs/", e.reg)
	if err != nil {
		e.t.Fatal(err)
	}
	sp, err := spool.Open(e.dir)
	if err != nil {
		e.t.Fatal(err)
	}
	e.m, err = New(Options{Spool: sp, Store: e.store, ChunkInterval: e.interval, CloseWait: 20 * time.Second,
		MaxChunkObject: 6 * mib, RetryMin: 20 * time.Millisecond, RetryMax: 50 * time.Millisecond, Registry: e.reg})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(e.m.Close)
	e.s, _, err = e.m.Open(OpenRequest{RunID: "r"})
	if err != nil {
		e.t.Fatal(err)
	}
}

// write writes n bytes of log lines as one chunk and commits them.
func (e *s3Env) write(n int) {
	e.t.Helper()
	rng := rand.New(rand.NewPCG(uint64(len(e.data)), 7))
	var b bytes.Buffer
	for b.Len() < n {
		fmt.Fprintf(&b, "line %d of the run: %x\n", len(e.data)+b.Len(), rng.Uint64())
	}
	chunk := b.Bytes()[:n]
	chunk[n-1] = '\n' // a clean point: nothing held back by the maskers
	e.seq++
	if _, _, err := e.s.Write(Chunk{Sequence: e.seq, Stream: StreamStdout, Data: chunk}); err != nil {
		e.t.Fatal(err)
	}
	if _, _, err := e.s.Commit(); err != nil {
		e.t.Fatal(err)
	}
	e.data = append(e.data, chunk...)
}

// run returns run "r" (nil once finished).
func (e *s3Env) run() *run {
	e.m.mu.Lock()
	defer e.m.mu.Unlock()
	return e.m.runs["r"]
}

// waitUploaded waits until the live chunks hold n bytes of the log.
func (e *s3Env) waitUploaded(n int64) {
	e.t.Helper()
	r := e.run()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r.mu.Lock()
		got := r.state.UploadedBytes
		r.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("live chunks hold %d bytes, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// close closes the log and waits for the final object.
func (e *s3Env) close() {
	e.t.Helper()
	r := e.run()
	if _, err := e.s.Close(e.t.Context(), e.seq); err != nil {
		e.t.Fatal(err)
	}
	select {
	case <-r.finalDone:
	case <-time.After(20 * time.Second):
		e.t.Fatal("final object not stored")
	}
}

// checkFinal checks that the final object is the log and that no live
// chunk is left.
func (e *s3Env) checkFinal() {
	e.t.Helper()
	body, meta, ok := e.s3.Get(e.t, "runs/r/log")
	if !ok {
		e.t.Fatal("no final object")
	}
	if !bytes.Equal(body, e.data) {
		e.t.Errorf("final object of %d bytes differs from the log of %d", len(body), len(e.data))
	}
	if meta[s3log.MetaBytes] != fmt.Sprint(len(e.data)) || len(meta[s3log.MetaSHA256]) != 64 {
		e.t.Errorf("final object metadata %v", meta)
	}
	if keys := e.s3.List(e.t, "runs/r/chunks/"); len(keys) > 0 {
		e.t.Errorf("live chunks left: %q", keys)
	}
}

// sentForFinal returns the body bytes sent since the counts were reset
// (parts and whole puts): with the live chunks all uploaded before, those
// of the final object.
func (e *s3Env) sentForFinal() int64 {
	return e.s3.BodyBytes(s3test.KindUploadPart) + e.s3.BodyBytes(s3test.KindPut)
}

// TestFinalFromLiveChunks: a fast run's bytes are uploaded as live chunks
// of 6 MiB while it runs (a commit leaving that much not uploaded starts
// one, not the interval of an hour), and the final object is assembled
// from them by the S3 server (UploadPartCopy): at close only the last
// MiB is sent again, and the final object is the log, byte for byte.
func TestFinalFromLiveChunks(t *testing.T) {
	e := newS3Env(t, time.Hour)
	for range 4 {
		e.write(6 * mib)
	}
	e.waitUploaded(24 * mib)
	if got := e.s3.Requests(s3test.KindPut); got != 4 {
		t.Errorf("%d live chunks put while the run went on, want 4", got)
	}
	e.write(mib)
	e.s3.ResetCounts()
	e.close()
	e.checkFinal()
	if got := e.s3.Requests(s3test.KindUploadPartCopy); got != 4 {
		t.Errorf("%d parts copied, want the 4 live chunks", got)
	}
	if got := e.sentForFinal(); got < mib || got > mib+64<<10 {
		t.Errorf("%d bytes sent for the final object, want the last MiB only", got)
	}
	if got := e.s3.Requests(s3test.KindPut); got != 0 {
		t.Errorf("%d objects put at close, want none", got)
	}
}

// TestFinalSmallChunksMixedIn: live chunks smaller than S3's smallest part
// (uploaded by the interval of a slow run) are sent again at close, merged
// with the bytes around them into parts of at least 5 MiB; a big chunk
// after them is copied.
func TestFinalSmallChunksMixedIn(t *testing.T) {
	e := newS3Env(t, 20*time.Millisecond)
	for _, n := range []int{2 * mib, 7 * mib, mib, 6 * mib} {
		e.write(n)
		e.waitUploaded(int64(len(e.data)))
	}
	e.write(3 * mib)
	e.waitUploaded(19 * mib)
	e.s3.ResetCounts()
	e.close()
	e.checkFinal()
	// Chunks: 2 MiB (small), 7 MiB or 6+1 MiB, 1 MiB (small), 6 MiB at
	// 10 MiB, 3 MiB (small). Bytes [0, 10 MiB) are sent (the 7 MiB chunk follows a small
	// one: copying it would leave a 2 MiB part before it), the chunk at
	// 10 MiB is copied, the last 3 MiB sent.
	if got := e.s3.Requests(s3test.KindUploadPartCopy); got != 1 {
		t.Errorf("%d parts copied, want 1", got)
	}
	if got, want := e.sentForFinal(), int64(13*mib); got < want || got > want+64<<10 {
		t.Errorf("%d bytes sent for the final object, want %d", got, want)
	}
}

// TestFinalSmallLog: a log shorter than S3's smallest part is put whole, as
// one object; no multipart upload.
func TestFinalSmallLog(t *testing.T) {
	e := newS3Env(t, 20*time.Millisecond)
	e.write(3 * mib)
	e.waitUploaded(3 * mib)
	e.s3.ResetCounts()
	e.close()
	e.checkFinal()
	if got := e.s3.Requests(s3test.KindCreateUpload); got != 0 {
		t.Errorf("%d multipart uploads for a log of 3 MiB", got)
	}
	if got := e.s3.Requests(s3test.KindPut); got != 1 {
		t.Errorf("%d objects put at close, want the final one", got)
	}
}

// TestFinalAfterRestart: logship restarted during the run does not know
// the ETags of the live chunks uploaded before: those bytes are sent
// again, the chunks after the restart are copied. Then logship is
// restarted while the final object is being assembled (S3 refuses
// CompleteMultipartUpload): the upload is aborted, and the new logship
// stores one correct final object and removes every live chunk; the
// uploads the first one could not abort (S3 refused that too, as a crash
// would leave them) are aborted by the second.
func TestFinalAfterRestart(t *testing.T) {
	e := newS3Env(t, time.Hour)
	e.write(6 * mib)
	e.write(6 * mib)
	e.waitUploaded(12 * mib)
	e.m.Close()
	e.start()
	e.write(6 * mib)
	e.waitUploaded(18 * mib)
	e.write(mib)
	e.s3.ResetCounts()
	e.close()
	e.checkFinal()
	if got := e.s3.Requests(s3test.KindUploadPartCopy); got != 1 {
		t.Errorf("%d parts copied, want the chunk uploaded after the restart", got)
	}
	if got, want := e.sentForFinal(), int64(13*mib); got < want || got > want+64<<10 {
		t.Errorf("%d bytes sent for the final object, want %d", got, want)
	}

	// Restart in the middle of the assembly.
	e2 := newS3Env(t, time.Hour)
	for range 3 {
		e2.write(6 * mib)
	}
	e2.waitUploaded(18 * mib)
	e2.write(mib)
	e2.s3.FailRequests(s3test.KindComplete, true)
	e2.s3.FailRequests(s3test.KindAbort, true) // uploads left behind, as by a crash
	if _, err := e2.s.Close(t.Context(), e2.seq); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for e2.s3.Requests(s3test.KindAbort) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no multipart upload aborted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	e2.m.Close()
	if n := e2.uploads(); n == 0 {
		t.Fatal("no multipart upload left behind")
	}
	e2.s3.FailRequests(s3test.KindComplete, false)
	e2.s3.FailRequests(s3test.KindAbort, false)
	e2.start() // the run is closed: Open answers it as such, its upload resumes
	if r := e2.run(); r != nil {
		select {
		case <-r.finalDone:
		case <-time.After(20 * time.Second):
			t.Fatal("final object not stored after the restart")
		}
	}
	e2.checkFinal()
	if n := e2.uploads(); n != 0 {
		t.Errorf("%d multipart uploads left after the restart", n)
	}
}

// uploads returns how many multipart uploads of the final object are in
// progress.
func (e *s3Env) uploads() int {
	e.t.Helper()
	out, err := e.s3.Client().ListMultipartUploads(e.t.Context(), &s3.ListMultipartUploadsInput{
		Bucket: aws.String(s3test.Bucket), Prefix: aws.String("runs/r/log")})
	if err != nil {
		e.t.Fatal(err)
	}
	return len(out.Uploads)
}

// TestFinalAlreadyStored: CompleteMultipartUpload carries If-None-Match: *.
// A final object this log stored before (same digest) is kept and the
// chunks removed; another log's final object is never replaced, and this
// log stays in its live chunks (counted as a conflict).
func TestFinalAlreadyStored(t *testing.T) {
	for _, same := range []bool{true, false} {
		t.Run(fmt.Sprintf("same-log=%v", same), func(t *testing.T) {
			e := newS3Env(t, time.Hour)
			for range 2 {
				e.write(6 * mib)
			}
			e.waitUploaded(12 * mib)
			e.write(mib)
			stored := e.data
			if !same {
				stored = []byte("another log of this run id\n")
			}
			sum, err := e.run().sp.SHA256()
			if err != nil {
				t.Fatal(err)
			}
			if !same {
				sum = strings.Repeat("0", 64)
			}
			if err := e.store.PutFinal(t.Context(), "r", bytes.NewReader(stored), s3log.Final{Bytes: int64(len(stored)), SHA256: sum}); err != nil {
				t.Fatal(err)
			}
			e.s3.ResetCounts()
			e.close()
			if got := e.s3.Requests(s3test.KindAbort); got != 1 {
				t.Errorf("%d multipart uploads aborted, want 1", got)
			}
			body, _, _ := e.s3.Get(t, "runs/r/log")
			if !bytes.Equal(body, stored) {
				t.Errorf("stored final object replaced")
			}
			chunks := e.s3.List(t, "runs/r/chunks/")
			conflicts := testutil.ToFloat64(e.m.met.finalConflicts)
			if same && (len(chunks) != 0 || conflicts != 0) {
				t.Errorf("this log's final object already stored: chunks %q left, %v conflicts", chunks, conflicts)
			}
			if !same {
				var live []byte
				for _, k := range chunks {
					b, _, _ := e.s3.Get(t, k)
					live = append(live, b...)
				}
				if !bytes.Equal(live, e.data) || conflicts != 1 {
					t.Errorf("another log stored: the live chunks hold %d bytes of %d, %v conflicts", len(live), len(e.data), conflicts)
				}
			}
		})
	}
}

// TestFinalFallback: a server that answers UploadPartCopy with
// NotImplemented, or with an ETag that is not the chunk's, gets the log put
// whole, the multipart upload aborted, and the fallback counted.
func TestFinalFallback(t *testing.T) {
	t.Run("not_implemented", func(t *testing.T) {
		testFinalFallback(t, "not_implemented", (*s3test.Server).RefuseUploadPartCopy)
	})
	t.Run("etag_mismatch", func(t *testing.T) {
		testFinalFallback(t, "etag_mismatch", (*s3test.Server).AnswerOtherCopyETags)
	})
}

func testFinalFallback(t *testing.T, reason string, setup func(*s3test.Server)) {
	e := newS3Env(t, time.Hour)
	setup(e.s3)
	for range 2 {
		e.write(6 * mib)
	}
	e.waitUploaded(12 * mib)
	e.write(mib)
	e.s3.ResetCounts()
	e.close()
	e.checkFinal()
	if got := e.s3.Requests(s3test.KindAbort); got != 1 {
		t.Errorf("%d multipart uploads aborted, want 1", got)
	}
	if got := e.s3.Requests(s3test.KindPut); got != 1 {
		t.Errorf("%d objects put at close, want the final one", got)
	}
	if got := counterValue(t, e.reg, "hangar_logship_final_multipart_fallbacks_total", "reason", reason); got != 1 {
		t.Errorf("fallbacks counted: %v, want 1", got)
	}
}

// counterValue returns the value of the counter name{label=value}.
func counterValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no counter %s{%s=%q}", name, label, value)
	return 0
}

// TestFinalParts: the plan of the final object's parts.
func TestFinalParts(t *testing.T) {
	m := &Manager{opts: Options{MaxChunkObject: 16 * mib}}
	type c struct {
		off, size int64
		etag      string
	}
	for _, tc := range []struct {
		name   string
		total  int64
		chunks []c
		want   []s3log.Part
	}{
		{"small log", 4 * mib, []c{{0, 4 * mib, "a"}}, nil},
		{"no chunk", 40 * mib, nil, nil},
		{"only small chunks", 20 * mib, []c{{0, 4 * mib, "a"}, {4 * mib, 4 * mib, "b"}}, nil},
		{"chunks and a short last part", 33 * mib, []c{{0, 16 * mib, "a"}, {16 * mib, 16 * mib, "b"}},
			[]s3log.Part{{Chunk: 1, ETag: "a", Size: 16 * mib}, {Chunk: 2, ETag: "b", Offset: 16 * mib, Size: 16 * mib}, {Offset: 32 * mib, Size: mib}}},
		{"small chunk first: merged into the sent part", 30 * mib, []c{{0, 2 * mib, "a"}, {2 * mib, 16 * mib, "b"}, {18 * mib, 6 * mib, "c"}},
			[]s3log.Part{{Size: 9 * mib}, {Offset: 9 * mib, Size: 9 * mib}, {Chunk: 3, ETag: "c", Offset: 18 * mib, Size: 6 * mib}, {Offset: 24 * mib, Size: 6 * mib}}},
		{"unknown ETag, big enough gap", 40 * mib, []c{{0, 16 * mib, ""}, {16 * mib, 16 * mib, "b"}},
			[]s3log.Part{{Size: 16 * mib}, {Chunk: 2, ETag: "b", Offset: 16 * mib, Size: 16 * mib}, {Offset: 32 * mib, Size: 8 * mib}}},
		{"long sent stretch cut evenly", 50 * mib, []c{{0, 6 * mib, ""}, {6 * mib, 6 * mib, ""}, {12 * mib, 6 * mib, ""}, {18 * mib, 6 * mib, "d"}},
			[]s3log.Part{{Size: 9 * mib}, {Offset: 9 * mib, Size: 9 * mib}, {Chunk: 4, ETag: "d", Offset: 18 * mib, Size: 6 * mib},
				{Offset: 24 * mib, Size: 13 * mib}, {Offset: 37 * mib, Size: 13 * mib}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &run{m: m, chunks: map[uint64]liveChunk{}}
			for i, ch := range tc.chunks {
				r.chunks[uint64(i+1)] = liveChunk{off: ch.off, size: ch.size, etag: ch.etag}
			}
			st := spool.State{MaskedBytes: tc.total, ChunkObjects: uint64(len(tc.chunks)), Closed: true}
			got := r.finalParts(st)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("parts\n got %v\nwant %v", got, tc.want)
			}
			for i, p := range got {
				if i < len(got)-1 && p.Size < s3log.MinPartSize {
					t.Errorf("part %d of %d bytes, not the last", i+1, p.Size)
				}
			}
		})
	}
}
