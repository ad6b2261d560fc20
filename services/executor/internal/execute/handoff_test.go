package execute

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/rclone/gofakes3"
	"github.com/rclone/gofakes3/s3mem"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	workv1 "github.com/hangar-dev/hangar/gen/go/hangar/work/v1"
	"github.com/hangar-dev/hangar/platform/sealedbox"
	"github.com/hangar-dev/hangar/services/executor/internal/handoff"
	"github.com/hangar-dev/hangar/services/executor/internal/processrt"
	"github.com/hangar-dev/hangar/services/executor/internal/supervise"
	"github.com/hangar-dev/hangar/services/executor/internal/workspace"
)

const bucket = "hangar-state"

// logs is a minimal logship: it keeps each log stream's bytes by run id.
type logs struct {
	logsv1.UnimplementedLogServiceServer
	mu    sync.Mutex
	data  map[string]*bytes.Buffer
	pools map[string]string // pool id of each stream's Open
}

func (l *logs) Ship(st logsv1.LogService_ShipServer) error {
	m, err := st.Recv()
	if err != nil {
		return err
	}
	id := m.GetOpen().GetRunId()
	l.mu.Lock()
	if l.pools == nil {
		l.pools = map[string]string{}
	}
	l.pools[id] = m.GetOpen().GetPoolId()
	l.mu.Unlock()
	if err := st.Send(&logsv1.ShipResponse{Kind: &logsv1.ShipResponse_Opened{Opened: &logsv1.Opened{NextSequence: 1}}}); err != nil {
		return err
	}
	for {
		m, err := st.Recv()
		if err != nil {
			return err
		}
		switch k := m.Kind.(type) {
		case *logsv1.ShipRequest_Chunk:
			l.mu.Lock()
			if l.data[id] == nil {
				l.data[id] = &bytes.Buffer{}
			}
			l.data[id].Write(k.Chunk.GetData())
			l.mu.Unlock()
			if err := st.Send(&logsv1.ShipResponse{Kind: &logsv1.ShipResponse_Ack{Ack: &logsv1.Ack{ThroughSequence: k.Chunk.GetSequence()}}}); err != nil {
				return err
			}
		case *logsv1.ShipRequest_Close:
			return st.Send(&logsv1.ShipResponse{Kind: &logsv1.ShipResponse_Closed{Closed: &logsv1.Closed{LogKey: "runs/" + id + "/log"}}})
		}
	}
}

func (l *logs) of(id string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.data[id]; b != nil {
		return b.String()
	}
	return ""
}

type fixture struct {
	exec    *Executor
	logs    *logs
	s3      *s3.Client
	poolKey *rsa.PrivateKey
	pubDER  []byte
}

func newFixture(t *testing.T, withState bool) *fixture {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket(context.Background(), bucket); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(backend, gofakes3.WithoutVersioning()).Server())
	t.Cleanup(srv.Close)
	client := s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("k", "s", ""), RetryMaxAttempts: 1,
	})

	l := &logs{data: map[string]*bytes.Buffer{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	logsv1.RegisterLogServiceServer(gs, l)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	cfg := Config{
		Runtime: processrt.Runtime{}, Logs: logsv1.NewLogServiceClient(conn),
		Workspace: workspace.Options{BaseDir: t.TempDir()},
		Limits:    supervise.Limits{RunTimeout: time.Minute, LogsTimeout: time.Minute},
		StopGrace: time.Second, Tracer: noop.NewTracerProvider().Tracer("test"), Propagator: propagation.TraceContext{},
		Logger: slog.New(slog.DiscardHandler),
	}
	if withState {
		cfg.State = handoff.NewStore(client, bucket, "runs/", 0)
	}
	return &fixture{exec: New(cfg), logs: l, s3: client, poolKey: key, pubDER: der}
}

func trackedSpec() *runv1.RunSpec {
	return &runv1.RunSpec{
		Type: runv1.RunType_RUN_TYPE_TRACKED, NeedsConfirmation: true,
		Source: &runv1.Source{ProjectRoot: "infra"},
		Phases: []*runv1.Phase{
			{Name: "init", Commands: []string{"mkdir -p .terraform && echo provider > .terraform/lock"}},
			{Name: "plan", Commands: []string{"echo 'plan: 1 to add' > plan.out"}},
			{Name: "apply", Commands: []string{"cat plan.out", "cat .terraform/lock", "echo applied"}},
		},
		Env: []*runv1.EnvVar{{Name: "TF_TOKEN", Value: "hunter2-secret", Secret: true}},
	}
}

type phases struct {
	mu  sync.Mutex
	got []string
}

func (p *phases) add(s string) { p.mu.Lock(); p.got = append(p.got, s); p.mu.Unlock() }
func (p *phases) list() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.got)
}

// plan runs the tracked run up to its hand-off and returns the Finish.
func (f *fixture) plan(t *testing.T, runID string) *workv1.Finish {
	t.Helper()
	var ph phases
	fin := f.exec.ExecuteFinish(context.Background(), "pool-a", &workv1.Assign{RunId: runID, Spec: trackedSpec(), PoolPublicKey: f.pubDER}, ph.add)
	if fin.GetUnconfirmed() == nil || fin.GetHandOff() == nil || fin.GetResult() != nil {
		t.Fatalf("plan: Finish = %v\nlog:\n%s", fin, f.logs.of(runID))
	}
	if got := ph.list(); !slices.Equal(got, []string{"prepare", "init", "plan"}) {
		t.Fatalf("plan phases = %v", got)
	}
	f.logs.mu.Lock()
	pool := f.logs.pools[runID]
	f.logs.mu.Unlock()
	if pool != "pool-a" {
		t.Errorf("the log was opened with pool id %q, want the gateway's pool-a", pool)
	}
	return fin
}

// resume is what the gateway does on ConfirmRun: unwrap the key and assign.
func (f *fixture) resume(t *testing.T, runID string, h *workv1.HandOff) *workv1.Assign {
	t.Helper()
	key, err := sealedbox.UnwrapKey(f.poolKey, h.GetWrappedKey())
	if err != nil {
		t.Fatal(err)
	}
	return &workv1.Assign{RunId: runID, Spec: trackedSpec(), PoolPublicKey: f.pubDER, Resume: &workv1.ResumeState{
		StateKey: h.GetStateKey(), Key: key, Nonce: h.GetNonce(), Sha256: h.GetSha256(), Size: h.GetSize(), Phases: []string{"apply"},
	}}
}

func (f *fixture) object(t *testing.T, key string) ([]byte, bool) {
	t.Helper()
	out, err := f.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return nil, false
	}
	defer out.Body.Close()
	b, _ := io.ReadAll(out.Body)
	return b, true
}

func TestTrackedRunHandsOffAndResumes(t *testing.T) {
	f := newFixture(t, true)
	fin := f.plan(t, "run-1")
	h := fin.GetHandOff()
	if h.GetStateKey() != "runs/state/run-1.bin" || fin.GetUnconfirmed().GetStateKey() != h.GetStateKey() {
		t.Fatalf("state key = %q / %q", h.GetStateKey(), fin.GetUnconfirmed().GetStateKey())
	}
	obj, ok := f.object(t, h.GetStateKey())
	if !ok || uint64(len(obj)) != h.GetSize() {
		t.Fatalf("object: %d bytes, exists %v; hand-off says %d", len(obj), ok, h.GetSize())
	}
	if bytes.Contains(obj, []byte("plan: 1 to add")) || bytes.Contains(obj, []byte("plan.out")) {
		t.Fatal("the stored state is not encrypted")
	}
	if strings.Contains(f.logs.of("run-1"), "applied") {
		t.Fatal("apply ran before confirmation")
	}

	var ph phases
	res := f.exec.ExecuteFinish(context.Background(), "pool-a", f.resume(t, "run-1", h), ph.add)
	r := res.GetResult()
	if r.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED || r.GetExitCode() != 0 || res.GetUnconfirmed() != nil {
		t.Fatalf("resumed: %v\nlog:\n%s", res, f.logs.of(ResumeLogID("run-1")))
	}
	if got := ph.list(); !slices.Equal(got, []string{"prepare", "apply"}) {
		t.Fatalf("resumed phases = %v", got)
	}
	log := f.logs.of(ResumeLogID("run-1"))
	for _, want := range []string{"plan: 1 to add", "provider", "applied"} {
		if !strings.Contains(log, want) {
			t.Errorf("the apply log lacks %q (a file written before the hand-off):\n%s", want, log)
		}
	}
	if r.GetLogKey() != "runs/"+ResumeLogID("run-1")+"/log" {
		t.Errorf("log key = %q", r.GetLogKey())
	}
	if _, ok := f.object(t, h.GetStateKey()); ok {
		t.Error("the state object outlived the resumed run")
	}
}

func TestTamperedStateFailsTheResume(t *testing.T) {
	f := newFixture(t, true)
	for _, tc := range []struct {
		name   string
		mutate func(a *workv1.Assign, obj []byte) []byte
	}{
		{"flipped byte", func(_ *workv1.Assign, obj []byte) []byte { obj[len(obj)/2] ^= 1; return obj }},
		{"replaced with matching digest", func(a *workv1.Assign, obj []byte) []byte {
			// An attacker who can also change the resume's digest still
			// cannot forge the authentication tag.
			obj[len(obj)-1] ^= 1
			a.Resume.Sha256 = sha256Hex(obj)
			return obj
		}},
		{"another run's state", func(a *workv1.Assign, obj []byte) []byte { a.RunId = "run-other"; return obj }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "run-t" + strings.ReplaceAll(tc.name, " ", "")[:4]
			h := f.plan(t, id).GetHandOff()
			a := f.resume(t, id, h)
			obj, _ := f.object(t, h.GetStateKey())
			obj = tc.mutate(a, obj)
			if _, err := f.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(h.GetStateKey()), Body: bytes.NewReader(obj)}); err != nil {
				t.Fatal(err)
			}
			var ph phases
			res := f.exec.ExecuteFinish(context.Background(), "pool-a", a, ph.add).GetResult()
			want := "stored state of run " + a.GetRunId() + " failed verification"
			if res.GetOutcome() != eventv1.Outcome_OUTCOME_FAILED || !strings.Contains(res.GetReason(), want) {
				t.Fatalf("result = %v, want FAILED with %q", res, want)
			}
			if slices.Contains(ph.list(), "apply") {
				t.Fatal("apply ran on tampered state")
			}
		})
	}
}

func TestNeedsConfirmationWithoutBucketFails(t *testing.T) {
	f := newFixture(t, false)
	fin := f.exec.ExecuteFinish(context.Background(), "pool-a", &workv1.Assign{RunId: "run-nb", Spec: trackedSpec(), PoolPublicKey: f.pubDER}, func(string) {})
	if r := fin.GetResult(); r.GetOutcome() != eventv1.Outcome_OUTCOME_FAILED || !strings.Contains(r.GetReason(), "HANGAR_S3_BUCKET") {
		t.Fatalf("Finish = %v", fin)
	}
	// A tracked run without needs_confirmation runs through.
	spec := trackedSpec()
	spec.NeedsConfirmation = false
	fin = f.exec.ExecuteFinish(context.Background(), "pool-a", &workv1.Assign{RunId: "run-nc", Spec: spec}, func(string) {})
	if r := fin.GetResult(); r.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED || !strings.Contains(f.logs.of("run-nc"), "applied") {
		t.Fatalf("Finish = %v\n%s", fin, f.logs.of("run-nc"))
	}
}

func TestResumeLogID(t *testing.T) {
	if got := ResumeLogID("abc"); got != "abc-resumed" {
		t.Errorf("short: %q", got)
	}
	long := strings.Repeat("x", 64)
	got := ResumeLogID(long)
	if len(got) != 64 || got == ResumeLogID(strings.Repeat("x", 63)+"y") || !strings.HasSuffix(got, "-resumed") {
		t.Errorf("long: %q", got)
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
