package ship_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	"github.com/hangar-dev/hangar/platform/telemetry"
	"github.com/hangar-dev/hangar/services/logship/internal/runlog"
	"github.com/hangar-dev/hangar/services/logship/internal/s3log"
	"github.com/hangar-dev/hangar/services/logship/internal/s3test"
	"github.com/hangar-dev/hangar/services/logship/internal/ship"
	"github.com/hangar-dev/hangar/services/logship/internal/spool"
)

// Shape of BenchmarkShip's runs: what the executor's logclient sends.
const (
	benchChunk      = 32<<10 - 256 // logclient.MaxChunk
	benchMaxUnacked = 8 << 20      // logclient's default window
	benchSecrets    = 10
)

// benchLogBytes is the output of one run (one benchmark iteration).
var benchLogBytes = 64 << 20

// BenchmarkShip ships one run of benchLogBytes (a terraform-like log in
// which about one line in 500 prints one of 10 secrets, raw or in base64)
// per iteration, over a real loopback gRPC connection to a logship with a
// real spool in a temporary directory (so real fsyncs) and the in-process
// S3 server: chunks of logclient.MaxChunk (32 KiB less 256 bytes) sent
// without waiting for acknowledgements, at
// most 8 MiB unacknowledged (as the executor's logclient does), then Close,
// which answers once the final object is uploaded. MB/s counts raw bytes.
func BenchmarkShip(b *testing.B) {
	secrets := make([][]byte, benchSecrets)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range secrets {
		secrets[i] = []byte(fmt.Sprintf("tok_%016x%012x", rng.Uint64(), rng.Uint64()>>16))
	}
	data := benchLog(benchLogBytes, secrets)
	for _, bc := range []struct {
		name   string
		limit  int64
		stdout bool
		sink   bool
	}{
		{"default", 0, false, false},
		{"tail-phase", 8 << 20, false, false}, // HANGAR_LOG_MAX_BYTES=8MiB: 60 MiB go through the tail segment
		{"stdout", 0, true, false},            // HANGAR_RUN_LOGS_ON_STANDARD_OUTPUT (to io.Discard)
		// logship alone: the S3 endpoint reads and discards what it is sent,
		// so that the in-process S3 server's own work (gofakes3 hashes every
		// object with MD5 twice and copies it) is not counted as logship's.
		{"s3-sink", 0, false, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var stdout io.Writer
			if bc.stdout {
				stdout = io.Discard
			}
			client := startBenchLogship(b, bc.limit, stdout, bc.sink)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			b.ResetTimer()
			var closing, waiting time.Duration
			cpu0 := processCPU(b)
			for i := range b.N {
				c, w := benchRun(b, client, "bench-"+strconv.Itoa(i), secrets, data)
				closing += c
				waiting += w
			}
			cpu := processCPU(b) - cpu0
			b.ReportMetric(float64(closing.Milliseconds())/float64(b.N), "ms-close/op")
			b.ReportMetric(float64(waiting.Milliseconds())/float64(b.N), "ms-window/op")
			// The whole process's CPU (user and system): logship, and the
			// benchmark's client and S3 endpoint beside it.
			b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
		})
	}
}

// processCPU returns the CPU time (user and system) the process used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startBenchLogship(b *testing.B, limit int64, stdout io.Writer, sink bool) logsv1.LogServiceClient {
	var client *s3.Client
	if sink {
		client = startS3Sink(b)
	} else {
		client = s3test.Start(b).Client()
	}
	reg := prometheus.NewRegistry()
	store, err := s3log.New(client, s3test.Bucket, "runs/", reg)
	if err != nil {
		b.Fatal(err)
	}
	sp, err := spool.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	mgr, err := runlog.New(runlog.Options{Spool: sp, Store: store, MinSecretLength: 6, ChunkInterval: 5 * time.Second,
		CloseWait: time.Minute, Logger: log, Registry: reg, MaxLogBytes: limit, Stdout: stdout})
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer(ship.ServerOptions()...)
	logsv1.RegisterLogServiceServer(srv, ship.New(ship.Deps{Runs: mgr, Finals: store, Tracer: noop.NewTracerProvider().Tracer(""),
		Propagator: telemetry.NewPropagator(), Logger: log}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		conn.Close()
		srv.Stop()
		mgr.Close()
	})
	return logsv1.NewLogServiceClient(conn)
}

// startS3Sink starts an HTTP server on loopback that speaks just enough of
// the S3 API for logship's write path: it reads every PUT's body to the end
// and discards it, answers HEAD and GET with 404 and DELETE with 204, and
// the multipart calls of a final object assembled from the live chunks
// (every ETag is "sink", so each copied chunk checks). It
// returns a client of it (path-style, signed like any S3 client).
func startS3Sink(b *testing.B) *s3.Client {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Query().Has("uploads"):
			fmt.Fprint(w, `<InitiateMultipartUploadResult><UploadId>sink</UploadId></InitiateMultipartUploadResult>`)
			return
		case r.Method == http.MethodPost:
			fmt.Fprint(w, `<CompleteMultipartUploadResult><ETag>"sink"</ETag></CompleteMultipartUploadResult>`)
			return
		case r.Method == http.MethodPut && r.Header.Get("X-Amz-Copy-Source") != "":
			fmt.Fprint(w, `<CopyPartResult><ETag>"sink"</ETag></CopyPartResult>`)
			return
		}
		switch r.Method {
		case http.MethodPut:
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("ETag", `"sink"`)
			w.WriteHeader(http.StatusOK)
		case http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	b.Cleanup(srv.Close)
	return s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), UsePathStyle: true,
		Credentials:      credentials.NewStaticCredentialsProvider(s3test.AccessKey, s3test.SecretKey, ""),
		RetryMaxAttempts: 1,
	})
}

// benchRun ships data as one run, as logclient does: chunks are sent as
// long as at most benchMaxUnacked bytes wait for an acknowledgement. It
// returns the time from sending Close to receiving Closed (the last
// commit, the stored log's hash and the final upload), and the time the
// sender waited for acknowledgements with its window full.
func benchRun(b *testing.B, client logsv1.LogServiceClient, runID string, secrets [][]byte, data []byte) (closing, waiting time.Duration) {
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	st, err := client.Ship(ctx)
	if err != nil {
		b.Fatal(err)
	}
	open := &logsv1.Open{RunId: runID, PoolId: "pool", StackId: "stack"}
	for i, s := range secrets {
		open.Secrets = append(open.Secrets, &logsv1.Secret{Name: "SECRET_" + strconv.Itoa(i), Value: s})
	}
	if err := st.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Open{Open: open}}); err != nil {
		b.Fatal(err)
	}
	if resp, err := st.Recv(); err != nil || resp.GetOpened().GetNextSequence() != 1 {
		b.Fatalf("Open: %v %v", resp, err)
	}
	nChunks := (len(data) + benchChunk - 1) / benchChunk
	var (
		mu     sync.Mutex
		cond   = sync.NewCond(&mu)
		acked  uint64
		closed *logsv1.Closed
		rerr   error
	)
	go func() {
		for {
			resp, err := st.Recv()
			mu.Lock()
			switch {
			case err != nil:
				rerr = err
			case resp.GetAck() != nil:
				acked = max(acked, resp.GetAck().GetThroughSequence())
			case resp.GetClosed() != nil:
				closed = resp.GetClosed()
			}
			cond.Broadcast()
			done := err != nil || closed != nil
			mu.Unlock()
			if done {
				return
			}
		}
	}()
	now := time.Now().UnixMilli()
	for i := range nChunks {
		seq := uint64(i + 1)
		mu.Lock()
		if int(seq-1-acked)*benchChunk >= benchMaxUnacked {
			start := time.Now()
			for int(seq-1-acked)*benchChunk >= benchMaxUnacked && rerr == nil {
				cond.Wait()
			}
			waiting += time.Since(start)
		}
		err := rerr
		mu.Unlock()
		if err != nil {
			b.Fatalf("chunk %d: %v", seq, err)
		}
		chunk := data[i*benchChunk : min(len(data), (i+1)*benchChunk)]
		if err := st.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Chunk{Chunk: &logsv1.Chunk{
			Sequence: seq, Stream: logsv1.Stream_STREAM_STDOUT, Data: chunk, TimeUnixMs: now}}}); err != nil {
			b.Fatalf("send chunk %d: %v", seq, err)
		}
	}
	closeStart := time.Now()
	if err := st.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Close{Close: &logsv1.Close{LastSequence: uint64(nChunks)}}}); err != nil {
		b.Fatal(err)
	}
	mu.Lock()
	for closed == nil && rerr == nil {
		cond.Wait()
	}
	mu.Unlock()
	if closed == nil {
		b.Fatalf("Close: %v", rerr)
	}
	return time.Since(closeStart), waiting
}

// benchLog returns size bytes of a plausible terraform apply log; about one
// line in 500 prints a secret, raw or in base64.
func benchLog(size int, secrets [][]byte) []byte {
	rng := rand.New(rand.NewPCG(7, 7))
	resources := []string{"aws_instance.web", "aws_security_group.lb", "aws_s3_bucket.logs", "module.vpc.aws_subnet.private", "aws_iam_role_policy.ci"}
	var b bytes.Buffer
	for b.Len() < size {
		r := resources[rng.IntN(len(resources))]
		i := rng.IntN(24)
		switch rng.IntN(6) {
		case 0:
			fmt.Fprintf(&b, "\x1b[0m\x1b[1m%s[%d]: Creating...\x1b[0m\x1b[0m\n", r, i)
		case 1:
			fmt.Fprintf(&b, "\x1b[0m\x1b[1m%s[%d]: Creation complete after %ds [id=i-%016x]\x1b[0m\n", r, i, rng.IntN(300), rng.Uint64())
		case 2:
			fmt.Fprintf(&b, "      \x1b[32m+\x1b[0m\x1b[0m arn = (known after apply)\n      \x1b[32m+\x1b[0m\x1b[0m ami = \"ami-%012x\"\n", rng.Uint64()>>16)
		case 3:
			fmt.Fprintf(&b, "%s[%d]: Refreshing state... [id=sg-%08x]\n", r, i, rng.Uint32())
		case 4:
			fmt.Fprintf(&b, "2026-11-27T03:%02d:%02d.%03dZ [DEBUG] provider.terraform-provider-aws_v5.%d.0: HTTP Request Sent: http.method=POST tf_rpc=ApplyResourceChange\n", rng.IntN(60), rng.IntN(60), rng.IntN(1000), rng.IntN(80))
		default:
			if rng.IntN(100) == 0 {
				s := secrets[rng.IntN(len(secrets))]
				fmt.Fprintf(&b, "export TOKEN=%s AUTH=%s\n", s, base64.StdEncoding.EncodeToString(s))
			} else {
				fmt.Fprintf(&b, "%s[%d]: Still creating... [%ds elapsed]\n", r, i, 10*rng.IntN(30))
			}
		}
	}
	return b.Bytes()[:size]
}
