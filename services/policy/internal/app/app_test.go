package app

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	policyv1 "github.com/hangar-dev/hangar/gen/go/hangar/policy/v1"
	"github.com/hangar-dev/hangar/platform/telemetry"
	"github.com/hangar-dev/hangar/platform/telemetry/otlprecv"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
	"github.com/hangar-dev/hangar/platform/tlsconfig/testpki"
	"github.com/hangar-dev/hangar/services/policy/internal/config"
	"github.com/hangar-dev/hangar/services/policy/internal/engine"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

const policy = `package hangar.initialization

deny contains "stack is frozen" if "frozen" in input.stack.labels

deny contains sprintf("image %s is not allowed", [input.runner_image]) if {
	not startswith(input.runner_image, "registry.internal/")
}
`

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testConfig(t *testing.T, policySrc string) config.Config {
	t.Helper()
	cfg := config.Config{
		GRPCAddr:  "127.0.0.1:0",
		DebugAddr: "127.0.0.1:0",
		LogLevel:  slog.LevelDebug,
		Telemetry: telemetry.Config{ServiceName: config.ServiceName},
	}
	if policySrc != "" {
		cfg.RunInitializationPolicy = filepath.Join(t.TempDir(), "policy.rego")
		if err := os.WriteFile(cfg.RunInitializationPolicy, []byte(policySrc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cfg
}

// start runs the service until the test ends and returns it with its log.
func start(t *testing.T, cfg config.Config) (*App, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	a, err := New(ctx, cfg, Deps{Logger: log})
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return a, logs
}

func dialPlain(t *testing.T, a *App) policyv1.PolicyServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(a.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return policyv1.NewPolicyServiceClient(conn)
}

func TestServeOverLoopback(t *testing.T) {
	a, logs := start(t, testConfig(t, policy))
	client := dialPlain(t, a)
	ctx := context.Background()

	resp, err := client.Evaluate(ctx, &policyv1.EvaluateRequest{
		Run:         &policyv1.RunInput{Id: "r1", Type: "TRACKED"},
		RunnerImage: "registry.internal/runner:1",
	})
	if err != nil || !resp.GetAllowed() || len(resp.GetDeny()) != 0 {
		t.Fatalf("allowed run: %v, %v", resp, err)
	}

	resp, err = client.Evaluate(ctx, &policyv1.EvaluateRequest{
		Run:         &policyv1.RunInput{Id: "r2", Type: "TRACKED"},
		Stack:       &policyv1.StackInput{Labels: []string{"frozen"}},
		RunnerImage: "docker.io/x",
	})
	want := []string{"image docker.io/x is not allowed", "stack is frozen"}
	if err != nil || resp.GetAllowed() || strings.Join(resp.GetDeny(), "|") != strings.Join(want, "|") {
		t.Fatalf("denied run: %v, %v", resp, err)
	}

	_, err = client.Evaluate(ctx, &policyv1.EvaluateRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no run id: %v", err)
	}

	metrics := get(t, "http://"+a.DebugAddr().String()+"/metrics")
	for _, line := range []string{
		`hangar_policy_decisions_total{result="allowed"} 1`,
		`hangar_policy_decisions_total{result="denied"} 1`,
		`hangar_policy_decisions_total{result="error"} 1`,
		`hangar_policy_decision_seconds_count 2`,
		`hangar_policy_decision_seconds_bucket{le="1e-05"}`,
		`hangar_service_info{`,
	} {
		if !strings.Contains(metrics, line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	if got := get(t, "http://"+a.DebugAddr().String()+"/readyz"); got != "ok\n" {
		t.Errorf("/readyz = %q", got)
	}
	if !strings.Contains(logs.String(), "run-initialization policy loaded") {
		t.Errorf("log lacks the loaded policy:\n%s", logs)
	}
}

func TestNoPolicySaidOnce(t *testing.T) {
	a, logs := start(t, testConfig(t, ""))
	client := dialPlain(t, a)
	for i := range 3 {
		resp, err := client.Evaluate(context.Background(), &policyv1.EvaluateRequest{
			Run: &policyv1.RunInput{Id: "r" + string(rune('0'+i))}, RunnerImage: "anything",
		})
		if err != nil || !resp.GetAllowed() {
			t.Fatalf("Evaluate: %v, %v", resp, err)
		}
	}
	if n := strings.Count(logs.String(), NoPolicyMessage); n != 1 {
		t.Errorf("%q logged %d times, want once:\n%s", NoPolicyMessage, n, logs)
	}
}

func TestInvalidPolicyStopsStart(t *testing.T) {
	cfg := testConfig(t, "package hangar.initialization\n\ndeny contains msg if {\n\tinput.run.id == \"x\"\n}\n")
	_, err := New(context.Background(), cfg, Deps{})
	if !errors.Is(err, engine.ErrInvalidPolicy) {
		t.Fatalf("New() error = %v, want ErrInvalidPolicy", err)
	}
	if want := cfg.RunInitializationPolicy + ":3: rego_unsafe_var_error"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q lacks %q", err, want)
	}
}

// TestMutualTLS: with its pool certificate, the policy answers only
// gateways of its pool; no certificate, another CA's, or another role's is
// refused.
func TestMutualTLS(t *testing.T) {
	ca, err := testpki.NewCA("hangar test CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := testpki.NewCA("someone else's CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	serverCert, serverKey, err := ca.IssueRole("p1", "policy", "policy", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, policy)
	cfg.TLSCert = write("server.pem", serverCert)
	cfg.TLSKey = write("server-key.pem", serverKey)
	cfg.TLSCA = write("ca.pem", ca.CertPEM())
	a, _ := start(t, cfg)

	evaluate := func(tlsCfg credentials.TransportCredentials) error {
		conn, err := grpc.NewClient(a.GRPCAddr().String(), grpc.WithTransportCredentials(tlsCfg))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = policyv1.NewPolicyServiceClient(conn).Evaluate(ctx, &policyv1.EvaluateRequest{
			Run: &policyv1.RunInput{Id: "r1"}, RunnerImage: "registry.internal/r",
		})
		return err
	}
	client := func(c *testpki.CA, role string) credentials.TransportCredentials {
		cert, key, err := c.IssueRole("p1", role, "someone")
		if err != nil {
			t.Fatal(err)
		}
		conf, err := tlsconfig.ClientConfig(ca.CertPEM(), cert, key, "")
		if err != nil {
			t.Fatal(err)
		}
		return credentials.NewTLS(conf)
	}
	if err := evaluate(client(ca, "gateway")); err != nil {
		t.Errorf("gateway certificate: %v", err)
	}
	for _, role := range []string{"executor", "operator", "logship"} {
		if err := evaluate(client(ca, role)); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s certificate: %v, want PermissionDenied", role, err)
		}
	}
	if err := evaluate(client(other, "gateway")); status.Code(err) != codes.Unavailable {
		t.Errorf("gateway certificate of another CA: %v, want Unavailable", err)
	}
	withoutCert, err := tlsconfig.ClientConfig(ca.CertPEM(), nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := evaluate(credentials.NewTLS(withoutCert)); status.Code(err) != codes.Unavailable {
		t.Errorf("client without certificate: %v, want Unavailable", err)
	}
}

func TestSpansExported(t *testing.T) {
	ctx := context.Background()
	recv, err := otlprecv.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(recv.Close) // after the service has flushed its spans (cleanups run last-in first-out)
	cfg := testConfig(t, policy)
	cfg.Telemetry.OTLPEndpoint = recv.Addr()
	cfg.Telemetry.Insecure = true
	cfg.Telemetry.BatchTimeout = 50 * time.Millisecond
	a, _ := start(t, cfg)

	_, err = dialPlain(t, a).Evaluate(ctx, &policyv1.EvaluateRequest{
		Run:                  &policyv1.RunInput{Id: "run-span"},
		RunnerImage:          "docker.io/x",
		EnvironmentVariables: []string{"TF_TOKEN"},
	})
	if err != nil {
		t.Fatal(err)
	}
	spans, err := recv.WaitFor(func(spans []otlprecv.RecordedSpan) bool {
		for _, s := range spans {
			if s.Name == "policy.Evaluate" {
				return true
			}
		}
		return false
	}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range spans {
		if s.Name != "policy.Evaluate" {
			continue
		}
		if s.Service != config.ServiceName || s.Attributes["hangar.run.id"] != "run-span" ||
			s.Attributes["hangar.policy.result"] != "denied" || s.ParentSpanID == "" {
			t.Errorf("span = %+v", s)
		}
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}
