package ship_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	"github.com/hangar-dev/hangar/platform/telemetry"
	"github.com/hangar-dev/hangar/services/logship/internal/runlog"
	"github.com/hangar-dev/hangar/services/logship/internal/s3log"
	"github.com/hangar-dev/hangar/services/logship/internal/s3test"
	"github.com/hangar-dev/hangar/services/logship/internal/ship"
	"github.com/hangar-dev/hangar/services/logship/internal/spool"
)

const mask = "******"

// logship is one logship instance: manager, gRPC server on a real socket,
// and a client connection to it.
type logship struct {
	t      *testing.T
	mgr    *runlog.Manager
	srv    *grpc.Server
	conn   *grpc.ClientConn
	client logsv1.LogServiceClient
	reg    *prometheus.Registry
	spans  *tracetest.SpanRecorder
	logs   *syncBuffer
	spool  string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type options struct {
	chunkInterval time.Duration
	closeWait     time.Duration
	maxLogBytes   int64
	stdout        io.Writer
}

func startLogship(t *testing.T, s3 *s3test.Server, spoolDir string, o options) *logship {
	t.Helper()
	if o.chunkInterval == 0 {
		o.chunkInterval = 50 * time.Millisecond
	}
	if o.closeWait == 0 {
		o.closeWait = 10 * time.Second
	}
	reg := prometheus.NewRegistry()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(logs, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	store, err := s3log.New(s3.Client(), s3test.Bucket, "runs/", reg)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(spoolDir)
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := runlog.New(runlog.Options{Spool: sp, Store: store, MinSecretLength: 6, ChunkInterval: o.chunkInterval,
		CloseWait: o.closeWait, RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, Logger: log, Registry: reg,
		MaxLogBytes: o.maxLogBytes, Stdout: o.stdout})
	if err != nil {
		t.Fatal(err)
	}
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	srv := grpc.NewServer()
	logsv1.RegisterLogServiceServer(srv, ship.New(ship.Deps{Runs: mgr, Finals: store, Tracer: tp.Tracer("test"),
		Propagator: telemetry.NewPropagator(), Logger: log}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	l := &logship{t: t, mgr: mgr, srv: srv, conn: conn, client: logsv1.NewLogServiceClient(conn), reg: reg,
		spans: spans, logs: logs, spool: spoolDir}
	t.Cleanup(l.stop)
	return l
}

var stopMu sync.Mutex

func (l *logship) stop() {
	stopMu.Lock()
	defer stopMu.Unlock()
	if l.srv == nil {
		return
	}
	l.conn.Close()
	l.srv.Stop()
	l.mgr.Close()
	l.srv = nil
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// session is a client Ship stream.
type session struct {
	t      *testing.T
	stream logsv1.LogService_ShipClient
	cancel context.CancelFunc
	next   uint64
}

func (l *logship) open(t *testing.T, runID string, secrets map[string]string, tc map[string]string) *session {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	st, err := l.client.Ship(ctx)
	if err != nil {
		t.Fatal(err)
	}
	open := &logsv1.Open{RunId: runID, PoolId: "pool-1", StackId: "stack-1", TraceContext: tc}
	for name, v := range secrets {
		open.Secrets = append(open.Secrets, &logsv1.Secret{Name: name, Value: []byte(v)})
	}
	if err := st.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Open{Open: open}}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if resp.GetOpened() == nil {
		t.Fatalf("Open answered with %v", resp)
	}
	t.Cleanup(cancel)
	return &session{t: t, stream: st, cancel: cancel, next: resp.GetOpened().GetNextSequence()}
}

func (s *session) send(seq uint64, data string) {
	s.t.Helper()
	err := s.stream.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Chunk{Chunk: &logsv1.Chunk{
		Sequence: seq, Stream: logsv1.Stream_STREAM_STDOUT, Data: []byte(data), TimeUnixMs: time.Now().UnixMilli()}}})
	if err != nil {
		s.t.Fatalf("send chunk %d: %v", seq, err)
	}
}

// waitAck reads responses until an Ack through at least seq.
func (s *session) waitAck(seq uint64) uint64 {
	s.t.Helper()
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			s.t.Fatalf("waiting for ack %d: %v", seq, err)
		}
		if a := resp.GetAck(); a != nil && a.GetThroughSequence() >= seq {
			return a.GetThroughSequence()
		}
	}
}

func (s *session) close(last uint64) *logsv1.Closed {
	s.t.Helper()
	if err := s.stream.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Close{Close: &logsv1.Close{LastSequence: last}}}); err != nil {
		s.t.Fatalf("send close: %v", err)
	}
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			s.t.Fatalf("waiting for Closed: %v", err)
		}
		if c := resp.GetClosed(); c != nil {
			return c
		}
	}
}

// expectStatus reads until the stream fails and checks its code.
func (s *session) expectStatus(want codes.Code) {
	s.t.Helper()
	for {
		_, err := s.stream.Recv()
		if err != nil {
			if got := status.Code(err); got != want {
				s.t.Fatalf("stream ended with %v, want %v", err, want)
			}
			return
		}
	}
}

func maskAll(raw string, secrets map[string]string) string {
	for _, v := range secrets {
		raw = strings.ReplaceAll(raw, v, mask)
	}
	return raw
}

func checkFinal(t *testing.T, s3 *s3test.Server, runID string, closed *logsv1.Closed, want string) {
	t.Helper()
	if closed.GetLogKey() != "runs/"+runID+"/log" {
		t.Errorf("Closed.log_key = %q", closed.GetLogKey())
	}
	sum := sha256.Sum256([]byte(want))
	if closed.GetBytes() != uint64(len(want)) || closed.GetSha256() != hex.EncodeToString(sum[:]) {
		t.Errorf("Closed = %d bytes sha %s, want %d bytes sha %x", closed.GetBytes(), closed.GetSha256(), len(want), sum)
	}
	var body []byte
	var meta map[string]string
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ok bool
		if body, meta, ok = s3.Get(t, closed.GetLogKey()); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("final object %s never appeared", closed.GetLogKey())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if string(body) != want {
		t.Fatalf("final log:\n%q\nwant:\n%q", body, want)
	}
	if meta[s3log.MetaBytes] != strconv.Itoa(len(want)) || meta[s3log.MetaSHA256] != hex.EncodeToString(sum[:]) {
		t.Errorf("final object metadata = %v", meta)
	}
}

func waitSpoolGone(t *testing.T, dir, runID string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, runID)); errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("spool of %s not removed", runID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func assertNoSecretIn(t *testing.T, what string, data []byte, secrets map[string]string) {
	t.Helper()
	for name, v := range secrets {
		if len(v) >= 6 && bytes.Contains(data, []byte(v)) {
			t.Errorf("%s contains the value of secret %s", what, name)
		}
	}
}

func TestSecretsSplitAcrossChunksMaskedInS3(t *testing.T) {
	s3 := s3test.Start(t)
	dir := t.TempDir()
	l := startLogship(t, s3, dir, options{})
	secrets := map[string]string{"DB_PASSWORD": "hunter2-correct-horse", "API_TOKEN": "tok_9f8e7d6c5b4a", "PIN": "q9Z"}
	raw := "starting\npassword=hunter2-correct-horse\ntoken tok_9f8e7d6c5b4a end\nagain hunter2-correct-horse!\nbye\n"
	// Chunks cut everywhere, including one byte at a time through a secret.
	var chunks []string
	for i := 0; i < len(raw); {
		n := 1 + i%7
		if i > 40 && i < 70 {
			n = 1
		}
		n = min(n, len(raw)-i)
		chunks = append(chunks, raw[i:i+n])
		i += n
	}
	s := l.open(t, "run-split", secrets, nil)
	if s.next != 1 {
		t.Fatalf("next_sequence = %d, want 1", s.next)
	}
	for i, c := range chunks {
		s.send(uint64(i+1), c)
	}
	closed := s.close(uint64(len(chunks)))
	want := "[hangar] not masked in this log (shorter than 6 bytes): PIN\n" + maskAll(raw, secrets)
	checkFinal(t, s3, "run-split", closed, want)
	waitSpoolGone(t, dir, "run-split")
	// The log lives in one place: the live chunks are removed.
	if keys := s3.List(t, "runs/run-split/"); len(keys) != 1 || keys[0] != "runs/run-split/log" {
		t.Errorf("objects of the finished run: %q, want the final log only", keys)
	}

	// Every object of the run (live chunks too) is free of secrets, and the
	// live chunks, in key order, are a prefix of the final log.
	var live []byte
	for _, key := range s3.PutKeys("runs/run-split/") {
		body, _ := s3.Put(key)
		assertNoSecretIn(t, key, body, secrets)
		if strings.Contains(key, "/chunks/") {
			live = append(live, body...)
		}
	}
	if !strings.HasPrefix(want, string(live)) {
		t.Errorf("live chunks %q are not a prefix of the log", live)
	}
	// The short secret's name is logged, never its value; no secret value
	// appears in the logs.
	logs := l.logs.String()
	if !strings.Contains(logs, "PIN") {
		t.Errorf("the too-short secret's name is not logged:\n%s", logs)
	}
	assertNoSecretIn(t, "logship's logs", []byte(logs), map[string]string{"DB_PASSWORD": secrets["DB_PASSWORD"], "API_TOKEN": secrets["API_TOKEN"]})
	if strings.Contains(logs, "q9Z") {
		t.Error("logship's logs contain the value of the short secret")
	}

	if got := testutil.ToFloat64(counter(t, l.reg, "hangar_logship_bytes_in_total")); got != float64(len(raw)) {
		t.Errorf("bytes_in_total = %v, want %d", got, len(raw))
	}
	if got := testutil.ToFloat64(counter(t, l.reg, "hangar_logship_bytes_out_total")); got != float64(len(want)) {
		t.Errorf("bytes_out_total = %v, want %d", got, len(want))
	}
	if got := testutil.ToFloat64(counter(t, l.reg, "hangar_logship_masks_applied_total")); got != 3 {
		t.Errorf("masks_applied_total = %v, want 3", got)
	}
	if got := testutil.ToFloat64(counter(t, l.reg, "hangar_logship_runs_open")); got != 0 {
		t.Errorf("runs_open = %v, want 0", got)
	}
}

// counter finds a registered collector by metric name through Gather.
func counter(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var v float64
			for _, m := range mf.GetMetric() {
				switch {
				case m.GetCounter() != nil:
					v += m.GetCounter().GetValue()
				case m.GetGauge() != nil:
					v += m.GetGauge().GetValue()
				}
			}
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
			g.Set(v)
			return g
		}
	}
	t.Fatalf("metric %s not registered", name)
	return nil
}

func TestResendStoredOnce(t *testing.T) {
	s3 := s3test.Start(t)
	l := startLogship(t, s3, t.TempDir(), options{})
	s := l.open(t, "run-resend", nil, nil)
	for i, c := range []string{"one\n", "two\n", "three\n"} {
		s.send(uint64(i+1), c)
	}
	s.waitAck(3)
	s.send(2, "two\n")
	s.send(3, "three\n")
	if got := s.waitAck(3); got != 3 {
		t.Fatalf("ack of a resend = %d, want 3", got)
	}
	s.send(4, "four\n")
	closed := s.close(4)
	checkFinal(t, s3, "run-resend", closed, "one\ntwo\nthree\nfour\n")
}

// TestReopen breaks the stream (or restarts logship) in the middle of a run,
// after a chunk that ends inside a possible secret: that chunk is not
// acknowledged, next_sequence points at it, and the final log is identical
// to the masked input.
func TestReopen(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run("restart="+strconv.FormatBool(restart), func(t *testing.T) {
			s3 := s3test.Start(t)
			dir := t.TempDir()
			l := startLogship(t, s3, dir, options{})
			secrets := map[string]string{"TOKEN": "s3cr3t-v4lue-xyz"}
			chunks := []string{"line 1\n", "line 2\n", "line 3 s3cr3t", "-v4lue-xyz tail\n", "line 5\n", "done\n"}
			raw := strings.Join(chunks, "")

			s := l.open(t, "run-reopen", secrets, nil)
			for i, c := range chunks[:3] {
				s.send(uint64(i+1), c)
			}
			if got := s.waitAck(2); got != 2 {
				t.Fatalf("ack = %d, want 2", got)
			}
			// Chunk 3 ends with the beginning of the secret: held, not acked.
			time.Sleep(100 * time.Millisecond)
			s.cancel()

			if restart {
				l.stop()
				l = startLogship(t, s3, dir, options{})
			}
			s = l.open(t, "run-reopen", secrets, nil)
			if s.next != 3 {
				t.Fatalf("next_sequence after reopen = %d, want 3", s.next)
			}
			for i := s.next; i <= uint64(len(chunks)); i++ {
				s.send(i, chunks[i-1])
			}
			closed := s.close(uint64(len(chunks)))
			checkFinal(t, s3, "run-reopen", closed, maskAll(raw, secrets))
			waitSpoolGone(t, dir, "run-reopen")
		})
	}
}

func TestS3Outage(t *testing.T) {
	s3 := s3test.Start(t)
	dir := t.TempDir()
	l := startLogship(t, s3, dir, options{closeWait: 300 * time.Millisecond})
	secrets := map[string]string{"K": "outage-secret-1"}
	s := l.open(t, "run-outage", secrets, nil)
	var raw strings.Builder
	seq := uint64(0)
	sendLines := func(n int) {
		for range n {
			seq++
			line := "line " + strconv.Itoa(int(seq)) + " outage-secret-1\n"
			raw.WriteString(line)
			s.send(seq, line)
		}
		s.waitAck(seq)
	}
	sendLines(20)
	time.Sleep(150 * time.Millisecond) // some live chunks go out
	s3.Stop()
	sendLines(50) // acked from the spool while S3 is down
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	closed := s.close(seq)
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("Close waited %v with S3 down", waited)
	}
	if _, err := os.Stat(filepath.Join(dir, "run-outage")); err != nil {
		t.Fatalf("spool of the run is gone while S3 is down: %v", err)
	}
	s3.Restart()
	want := maskAll(raw.String(), secrets)
	checkFinal(t, s3, "run-outage", closed, want)
	waitSpoolGone(t, dir, "run-outage")
	if got := testutil.ToFloat64(counter(t, l.reg, "hangar_logship_s3_upload_errors_total")); got == 0 {
		t.Error("s3_upload_errors_total stayed 0 during the outage")
	}
}

func tail(t *testing.T, l *logship, runID string, offset uint64) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	st, err := l.client.Tail(ctx, &logsv1.TailRequest{RunId: runID, Offset: offset})
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for {
		resp, err := st.Recv()
		if err != nil {
			return b.String(), err
		}
		if resp.GetOffset() != offset+uint64(b.Len()) {
			t.Errorf("tail offset %d, want %d", resp.GetOffset(), offset+uint64(b.Len()))
		}
		b.Write(resp.GetData())
		if resp.GetEnd() {
			return b.String(), nil
		}
	}
}

func TestTail(t *testing.T) {
	s3 := s3test.Start(t)
	dir := t.TempDir()
	l := startLogship(t, s3, dir, options{})
	secrets := map[string]string{"PW": "tail-secret-99"}

	if _, err := tail(t, l, "run-unknown", 0); status.Code(err) != codes.NotFound {
		t.Fatalf("Tail of an unknown run: %v, want NotFound", err)
	}

	s := l.open(t, "run-tail", secrets, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	st, err := l.client.Tail(ctx, &logsv1.TailRequest{RunId: "run-tail"})
	if err != nil {
		t.Fatal(err)
	}
	lines := []string{"a tail-secret-99\n", "b\n", "c\n", "d\n"}
	var got strings.Builder
	for i, line := range lines {
		s.send(uint64(i+1), line)
		want := maskAll(strings.Join(lines[:i+1], ""), secrets)
		for got.Len() < len(want) { // live: each line arrives before the next is sent
			resp, err := st.Recv()
			if err != nil {
				t.Fatalf("tail: %v", err)
			}
			if resp.GetEnd() {
				t.Fatal("tail ended before Close")
			}
			got.Write(resp.GetData())
		}
		if got.String() != want {
			t.Fatalf("tail so far %q, want %q", got.String(), want)
		}
	}
	closed := s.close(uint64(len(lines)))
	resp, err := st.Recv()
	if err != nil || !resp.GetEnd() || len(resp.GetData()) != 0 {
		t.Fatalf("after Close: %v, %v; want end", resp, err)
	}
	want := maskAll(strings.Join(lines, ""), secrets)
	checkFinal(t, s3, "run-tail", closed, want)
	waitSpoolGone(t, dir, "run-tail")

	// Finished: served from the final object in S3, from any offset, also by
	// a logship that never saw the run.
	for _, ls := range []*logship{l, startLogship(t, s3, t.TempDir(), options{})} {
		for _, off := range []uint64{0, 5, uint64(len(want)), uint64(len(want)) + 3} {
			got, err := tail(t, ls, "run-tail", off)
			if err != nil {
				t.Fatalf("tail of a finished run from %d: %v", off, err)
			}
			if exp := want[min(int(off), len(want)):]; got != exp {
				t.Errorf("tail from %d = %q, want %q", off, got, exp)
			}
		}
	}
}

func TestProtocolErrors(t *testing.T) {
	s3 := s3test.Start(t)
	l := startLogship(t, s3, t.TempDir(), options{})
	for _, tc := range []struct {
		name string
		run  func(t *testing.T) *session
		want codes.Code
	}{
		{"first message not Open", func(t *testing.T) *session {
			st, err := l.client.Ship(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			_ = st.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Chunk{Chunk: &logsv1.Chunk{Sequence: 1, Data: []byte("x")}}})
			return &session{t: t, stream: st}
		}, codes.FailedPrecondition},
		{"Open without run id", func(t *testing.T) *session {
			st, err := l.client.Ship(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			_ = st.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Open{Open: &logsv1.Open{}}})
			return &session{t: t, stream: st}
		}, codes.InvalidArgument},
		{"run id with a slash", func(t *testing.T) *session {
			st, err := l.client.Ship(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			_ = st.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Open{Open: &logsv1.Open{RunId: "../etc"}}})
			return &session{t: t, stream: st}
		}, codes.InvalidArgument},
		{"sequence gap", func(t *testing.T) *session {
			s := l.open(t, "run-gap", nil, nil)
			s.send(1, "one\n")
			s.send(3, "three\n")
			return s
		}, codes.OutOfRange},
		{"close beyond the last chunk", func(t *testing.T) *session {
			s := l.open(t, "run-badclose", nil, nil)
			s.send(1, "one\n")
			_ = s.stream.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Close{Close: &logsv1.Close{LastSequence: 2}}})
			return s
		}, codes.OutOfRange},
		{"chunk after Close", func(t *testing.T) *session {
			s := l.open(t, "run-closed", nil, nil)
			s.send(1, "one\n")
			s.close(1)
			s = l.open(t, "run-closed", nil, nil)
			if s.next != 2 {
				t.Errorf("next_sequence of a closed run = %d, want 2", s.next)
			}
			s.send(1, "one\n")
			s.waitAck(1)
			s.send(2, "two\n")
			return s
		}, codes.FailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t).expectStatus(tc.want)
		})
	}
}

func TestSpanContinuesTraceContext(t *testing.T) {
	s3 := s3test.Start(t)
	l := startLogship(t, s3, t.TempDir(), options{})
	traceID := "4bf92f3577b34da6a3ce929d0e0e4736"
	tc := map[string]string{"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}
	s := l.open(t, "run-trace", map[string]string{"S": "span-secret-value"}, tc)
	s.send(1, "x span-secret-value\n")
	s.close(1)
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, sp := range l.spans.Ended() {
			if sp.Name() != "logship.Ship" {
				continue
			}
			if sp.SpanContext().TraceID().String() != traceID || sp.Parent().SpanID().String() != "00f067aa0ba902b7" {
				t.Fatalf("span trace %s parent %s", sp.SpanContext().TraceID(), sp.Parent().SpanID())
			}
			if sp.SpanKind() != trace.SpanKindServer {
				t.Errorf("span kind %v", sp.SpanKind())
			}
			for _, a := range sp.Attributes() {
				if strings.Contains(a.Value.Emit(), "span-secret-value") {
					t.Errorf("span attribute %s holds a secret", a.Key)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no logship.Ship span ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRestartResumesFinalUpload closes a run while S3 is down, restarts
// logship, brings S3 back: the new logship uploads the final log from the
// spool (with a log past the head limit, its tail read in place from the
// tail segment: spool.State.StoredHead),
// and a late reopen of the run is answered as closed.
func TestRestartResumesFinalUpload(t *testing.T) {
	const limit = 64 << 10 // runlog.MinMaxLogBytes: a 32 KiB head, a 32 KiB tail
	for _, tc := range []struct {
		name  string
		lines int // of 16 bytes, after the secret's line
	}{
		{"within the head", 1},
		{"tail kept whole", 2500},
		{"cut in the middle", 6000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s3 := s3test.Start(t)
			dir := t.TempDir()
			l := startLogship(t, s3, dir, options{closeWait: 100 * time.Millisecond, maxLogBytes: limit})
			secrets := map[string]string{"X": "resume-secret"}
			s := l.open(t, "run-resume", secrets, nil)
			var raw strings.Builder
			raw.WriteString("a resume-secret\n")
			for i := range tc.lines {
				fmt.Fprintf(&raw, "line %09d b\n", i)
			}
			var seq uint64
			for rest := raw.String(); rest != ""; {
				n := min(len(rest), 8<<10)
				seq++
				s.send(seq, rest[:n])
				rest = rest[n:]
			}
			s.waitAck(seq)
			s3.Stop()
			closed := s.close(seq)
			l.stop()

			s3.Restart()
			l = startLogship(t, s3, dir, options{maxLogBytes: limit})
			want := maskAll(raw.String(), secrets)
			if cut := len(want) - limit; cut > 0 {
				want = want[:limit/2] + fmt.Sprintf("\n[hangar] log truncated: %d bytes cut from the middle (limit %d bytes)\n", cut, limit) +
					want[len(want)-limit/2:]
			}
			checkFinal(t, s3, "run-resume", closed, want)
			waitSpoolGone(t, dir, "run-resume")

			s = l.open(t, "run-resume", secrets, nil)
			if s.next != seq+1 {
				t.Fatalf("next_sequence of a finished run = %d, want %d", s.next, seq+1)
			}
			if again := s.close(seq); again.GetSha256() != closed.GetSha256() || again.GetLogKey() != closed.GetLogKey() {
				t.Errorf("second Close = %v, want %v", again, closed)
			}
		})
	}
}
