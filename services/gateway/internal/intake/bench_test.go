package intake

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	policyv1 "github.com/hangar-dev/hangar/gen/go/hangar/policy/v1"
	"github.com/hangar-dev/hangar/platform/dial"
	"github.com/hangar-dev/hangar/platform/runenvelope"
	"github.com/hangar-dev/hangar/platform/telemetry"
	outboxpkg "github.com/hangar-dev/hangar/services/gateway/internal/events"
	"github.com/hangar-dev/hangar/services/gateway/internal/seen"
)

// benchPoolKey is the pool's RSA-4096 key (the size the docs tell operators to
// make), generated once: generation takes seconds.
var benchPoolKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 4096)
	if err != nil {
		panic(err)
	}
	return k
})

// allowAll is a PolicyService that admits every run. It stands in for the policy
// service so that this benchmark measures the gateway's side of the call (the
// gRPC round trip over loopback, marshalling, the input document); OPA's own
// cost, about 20-60µs per decision, is measured by the policy service's
// BenchmarkEvaluate (services/policy/internal/engine).
type allowAll struct {
	policyv1.UnimplementedPolicyServiceServer
}

func (allowAll) Evaluate(context.Context, *policyv1.EvaluateRequest) (*policyv1.EvaluateResponse, error) {
	return &policyv1.EvaluateResponse{Allowed: true}, nil
}

// discardPublisher acknowledges every event at once, as a broker on the same
// host would, without a network.
type discardPublisher struct{}

func (discardPublisher) Publish(context.Context, string, []byte) error { return nil }

// discardQueue takes admitted runs and drops them (dispatch is not intake).
type discardQueue struct{}

func (discardQueue) Admit(context.Context, *Run) error { return nil }

func (discardQueue) Known(string) bool { return false }

// BenchmarkIntake is the gateway's intake of one envelope, as Handle does it for
// each MQTT message: size and strict decoding, Ed25519 signature, expiry, the
// replay check (a durable write, fsync included, to a real seen store), RSA-4096
// OAEP unwrap and AES-GCM decryption of the spec, the policy decision over a real
// gRPC connection on loopback, and the received and admitted events through the
// real outbox. Compare it with BenchmarkRSA4096PrivateKeyOp, the physical floor
// of the step: the one private-key operation every envelope needs.
func BenchmarkIntake(b *testing.B) {
	key := benchPoolKey()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	store, err := seen.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer()
	policyv1.RegisterPolicyServiceServer(srv, allowAll{})
	go srv.Serve(lis)
	b.Cleanup(srv.Stop)
	tel, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	conn, err := dial.Dial(lis.Addr().String(), dial.Security{}, tel)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })

	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	outbox := outboxpkg.NewOutbox(discardPublisher{}, "pool-a", "gw-bench", log, reg, nil, nil)
	go outbox.Serve(ctx)

	in := New(Deps{
		Opener: &runenvelope.Opener{PoolID: "pool-a", PoolKey: key, VerifyKey: pub},
		Seen:   store, Policy: policyv1.NewPolicyServiceClient(conn), Events: outbox, Queue: discardQueue{},
		Metadata: map[string]string{"zone": "a"}, Tracer: tel.Tracer("bench"), Propagator: tel.Propagator(),
		Logger: log, Registry: reg,
	})

	// Envelopes are sealed ahead (by the control plane, not the gateway), in
	// batches so that memory stays bounded whatever b.N is.
	const batch = 256
	payloads := make([][]byte, 0, batch)
	n := 0
	seal := func() {
		payloads = payloads[:0]
		for range batch {
			n++
			p, err := runenvelope.Seal(runenvelope.SealParams{SigningKey: priv, PoolKey: &key.PublicKey,
				RunID: fmt.Sprintf("bench-%d", n), PoolID: "pool-a", Spec: spec, TTL: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			payloads = append(payloads, p)
		}
	}
	// One warm-up envelope: the gRPC connection is established lazily.
	seal()
	if err := in.Handle(ctx, payloads[0]); err != nil {
		b.Fatal(err)
	}
	seal()

	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if i == len(payloads) {
			b.StopTimer()
			seal()
			i = 0
			b.StartTimer()
		}
		if err := in.Handle(ctx, payloads[i]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.StopTimer()
	reportRunsPerSecond(b)
	if got := store.Len(); got < b.N {
		b.Fatalf("seen store holds %d runs after %d envelopes: not every envelope was admitted", got, b.N)
	}
}

// BenchmarkRSA4096PrivateKeyOp is rsa.DecryptOAEP of a wrapped 32-byte key with
// the pool's RSA-4096 key: the one private-key operation each envelope costs,
// the physical floor of BenchmarkIntake.
func BenchmarkRSA4096PrivateKeyOp(b *testing.B) {
	key := benchPoolKey()
	wrapped, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &key.PublicKey, make([]byte, 32), []byte("hangar.sealedbox.v1"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rsa.DecryptOAEP(sha256.New(), nil, key, wrapped, []byte("hangar.sealedbox.v1")); err != nil {
			b.Fatal(err)
		}
	}
	reportRunsPerSecond(b)
}

func reportRunsPerSecond(b *testing.B) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "runs/s")
	}
}
