package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/platform/mqtttopic"
	"github.com/hangar-dev/hangar/platform/telemetry/otlprecv"
	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// wait bounds every wait for something that should happen; it is generous on
// purpose: a slow machine must not fail a test.
const wait = 90 * time.Second

// frozenPolicy denies runs on stacks labelled "frozen".
const frozenPolicy = `package hangar.initialization

deny contains msg if {
	"frozen" in input.stack.labels
	msg := sprintf("stack %s is frozen", [input.stack.name])
}
`

// TestFoundation is issue 2's "Shown by", against the embedded broker and against
// Mosquitto: a pool made with openssl and hangarctl, its gateway admitting and
// denying runs under a Rego policy, refusing every kind of bad envelope and a
// replay while it keeps running, heartbeats and the Last Will, the broker's
// per-pool ACL and mTLS, and the gateway's start-up checks.
func TestFoundation(t *testing.T) {
	for _, broker := range []string{"embedded", "mosquitto"} {
		t.Run(broker, func(t *testing.T) { foundation(t, broker) })
	}
}

type foundationEnv struct {
	cp       *harness.ControlPlane
	broker   string
	kind     string
	obs      *harness.Observer
	gw       *harness.Gateway
	policy   *harness.Policy
	workerID string
	otlp     *otlprecv.Receiver
	tls      *harness.PoolTLS
}

// submit runs `hangarctl run submit` for pool-a with a fresh run id and the spec.
func (e *foundationEnv) submit(t *testing.T, spec string, args ...string) (string, harness.Result) {
	t.Helper()
	runID := newRunID()
	specFile := harness.WriteFile(t, t.TempDir(), "spec.json", spec)
	r := harness.Run(t, 3*time.Minute, nil, e.cp.Ctl, append([]string{"run", "submit", "--dir", e.cp.Dir, "--pool", "pool-a",
		"--spec", specFile, "--run-id", runID}, args...)...)
	return runID, r
}

func foundation(t *testing.T, kind string) {
	ctl := bins.Path(t, "hangarctl")
	gatewayBin := bins.Path(t, "gateway")
	policyBin := bins.Path(t, "policy")

	e := &foundationEnv{cp: harness.NewControlPlane(t, ctl), kind: kind, workerID: "gw-e2e-" + kind}
	switch kind {
	case "embedded":
		e.broker, _ = e.cp.StartEmbeddedBroker(t)
	case "mosquitto":
		e.broker, _ = e.cp.StartMosquitto(t)
	}

	// Pool A: key and CSR with the real openssl, signed by hangarctl.
	keyA, csrA := harness.OpenSSLKey(t, t.TempDir())
	tokenA := e.cp.CreatePool(t, "pool-a", csrA, e.broker)
	tokA := harness.DecodeToken(t, tokenA)
	if tokA.PoolID != "pool-a" || tokA.Broker != e.broker || tokA.CertificatePEM == "" || tokA.BrokerCAPEM == "" || tokA.RunVerificationKey == "" {
		t.Fatalf("pool-a token: unexpected content: %+v", tokA)
	}
	// Pool B: key and CSR with hangarctl keygen.
	keyB, csrB := e.cp.Keygen(t, t.TempDir())
	tokenB := e.cp.CreatePool(t, "pool-b", csrB, e.broker)

	// Traces of every service go to an in-process OTLP receiver.
	rcv, err := otlprecv.Start(context.Background())
	if err != nil {
		t.Fatalf("OTLP receiver: %v", err)
	}
	t.Cleanup(rcv.Close)
	e.otlp = rcv
	otlpEnv := []string{"HANGAR_OTLP_ENDPOINT=" + rcv.Addr(), "HANGAR_OTLP_INSECURE=true", "HANGAR_OTLP_BATCH_TIMEOUT=200ms"}

	// Pool A's services talk mutual TLS under its own CA (hangarctl pki).
	e.tls = e.cp.NewPoolTLS(t, "pool-a")
	e.policy = harness.StartPolicy(t, policyBin, harness.WriteFile(t, t.TempDir(), "policy.rego", frozenPolicy),
		append(e.tls.Env(t, "policy", "policy"), otlpEnv...)...)
	e.obs = harness.Observe(t, e.broker, e.cp.Dir, "pool-a")
	e.gw = harness.StartGateway(t, gatewayBin, tokenA, harness.KeyEnv(t, keyA), e.policy.GRPCAddr,
		append(append([]string{"HANGAR_METADATA_zone=test-a", "HANGAR_HEARTBEAT_INTERVAL=1s", "HANGAR_WORKER_ID=" + e.workerID},
			e.tls.Env(t, "gateway", "gateway")...), otlpEnv...)...)

	t.Run("allowed run is received then admitted", func(t *testing.T) {
		runID, r := e.submit(t, harness.Spec("Web", "team:web"), "--otlp", e.otlp.Addr())
		if r.Code != 0 || !strings.Contains(r.Stdout, "run "+runID+" submitted to pool pool-a") {
			t.Fatalf("hangarctl run submit: %s", r)
		}
		e.expectAdmitted(t, runID)

		// One trace crosses hangarctl, the gateway and the policy service.
		m := regexp.MustCompile(`\(trace ([0-9a-f]{32})\)`).FindStringSubmatch(r.Stdout)
		if m == nil {
			t.Fatalf("hangarctl run submit does not print the trace id: %s", r)
		}
		want := []string{"hangar-gateway", "hangar-policy", "hangarctl"}
		if _, err := e.otlp.WaitFor(func(spans []otlprecv.RecordedSpan) bool {
			got := otlprecv.Services(otlprecv.ByTrace(spans, m[1]))
			return !slices.ContainsFunc(want, func(s string) bool { return !slices.Contains(got, s) })
		}, wait); err != nil {
			t.Errorf("trace %s does not reach %v: %v", m[1], want, err)
		}
	})

	t.Run("denied run fails with the policy's message", func(t *testing.T) {
		runID, r := e.submit(t, harness.Spec("Vault", "team:sec", "frozen"), "--follow", "--timeout", "60s")
		if r.Code != 1 {
			t.Errorf("hangarctl run submit --follow of a denied run: want exit code 1: %s", r)
		}
		if !strings.Contains(r.Stdout, "stack Vault is frozen") {
			t.Errorf("hangarctl run submit --follow does not print the deny message: %s", r)
		}
		if !strings.Contains(r.Stdout+r.Stderr, "denied") {
			t.Errorf("hangarctl run submit --follow does not say the run was denied: %s", r)
		}
		denied := e.obs.WaitEvent(wait, "denied event of "+runID, func(ev *eventv1.Event) bool {
			return ev.GetRunId() == runID && ev.GetDenied() != nil
		})
		if got := denied.GetDenied().GetMessages(); !slices.Equal(got, []string{"stack Vault is frozen"}) {
			t.Errorf("deny messages = %q, want [\"stack Vault is frozen\"]", got)
		}
		e.obs.WaitEvent(wait, "received event of "+runID, isKind(runID, "received"))
		e.expectSequence(t, runID, "received", "denied")
	})

	corruptions := []struct {
		kind   string
		reason eventv1.RejectReason
		// signed: the signature is valid, so the rejection names the run.
		signed bool
	}{
		{"signature", eventv1.RejectReason_REJECT_REASON_BAD_SIGNATURE, false},
		{"ciphertext", eventv1.RejectReason_REJECT_REASON_DECRYPT_FAILED, true},
		{"wrong-pool", eventv1.RejectReason_REJECT_REASON_WRONG_POOL, true},
		{"expired", eventv1.RejectReason_REJECT_REASON_EXPIRED, true},
		{"oversize", eventv1.RejectReason_REJECT_REASON_OVERSIZE, false},
		{"malformed", eventv1.RejectReason_REJECT_REASON_MALFORMED, false},
		{"unknown-field", eventv1.RejectReason_REJECT_REASON_MALFORMED, false},
	}
	for _, c := range corruptions {
		t.Run("corrupt "+c.kind+" is rejected", func(t *testing.T) {
			before := eventIDs(e.obs.Events())
			runID, r := e.submit(t, harness.Spec("Web", "team:web"), "--corrupt", c.kind, "--follow", "--timeout", "60s")
			reasonName := strings.ToLower(strings.TrimPrefix(c.reason.String(), "REJECT_REASON_"))
			if r.Code != 1 || !strings.Contains(r.Stdout, "rejected: "+reasonName) {
				t.Errorf("hangarctl run submit --corrupt %s --follow: want exit code 1 and \"rejected: %s\": %s", c.kind, reasonName, r)
			}
			ev := e.obs.WaitEvent(wait, "new "+c.reason.String()+" event", func(ev *eventv1.Event) bool {
				return !before[ev.GetEventId()] && ev.GetRejected().GetReason() == c.reason &&
					(ev.GetRunId() == runID || ev.GetRunId() == "")
			})
			if ev.GetRejected().GetMessage() == "" {
				t.Errorf("rejection has no message: %s", harness.DescribeEvent(ev))
			}
			if ev.GetPoolId() != "pool-a" {
				t.Errorf("rejection pool_id = %q, want pool-a", ev.GetPoolId())
			}
			if c.signed {
				if ev.GetRunId() != runID {
					t.Errorf("rejection of a validly signed envelope: run_id = %q, want %q", ev.GetRunId(), runID)
				}
			} else if ev.GetRunId() != "" || !strings.HasPrefix(ev.GetEventId(), "envelope/") {
				t.Errorf("rejection of an envelope without a valid signature: want no run id and an envelope/ event id, got %s", harness.DescribeEvent(ev))
			}
			for _, other := range e.obs.RunEvents(runID) {
				if other.GetRejected() == nil {
					t.Errorf("the rejected run %s has another event: %s", runID, harness.DescribeEvent(other))
				}
			}
			e.expectGatewayRunning(t)
		})
	}

	t.Run("gateway keeps admitting after bad envelopes", func(t *testing.T) {
		runID, r := e.submit(t, harness.Spec("Web", "team:web"))
		if r.Code != 0 {
			t.Fatalf("hangarctl run submit: %s", r)
		}
		e.expectAdmitted(t, runID)
	})

	t.Run("copy of a run in hand is dropped, copy of an ended run is refused", func(t *testing.T) {
		// Two copies at once (as a QoS 1 redelivery would bring): the run is
		// handled once and the copy produces no event at all, least of all a
		// final rejection while the run goes on.
		runID, r := e.submit(t, harness.Spec("Web", "team:web"), "--corrupt", "replay")
		if r.Code != 0 {
			t.Fatalf("hangarctl run submit --corrupt replay: %s", r)
		}
		e.expectAdmitted(t, runID)
		deadline := time.Now().Add(wait)
		for metricValue(scrape(t, "http://"+e.gw.DebugAddr+"/metrics"), "hangar_gateway_envelopes_redelivered_total") < 1 {
			if time.Now().After(deadline) {
				t.Fatal("the second copy was not counted as a redelivery (hangar_gateway_envelopes_redelivered_total)")
			}
			time.Sleep(100 * time.Millisecond)
		}
		var received, rejected int
		for _, ev := range e.obs.RunEvents(runID) {
			switch {
			case ev.GetReceived() != nil:
				received++
			case ev.GetRejected() != nil:
				rejected++
			}
		}
		if received != 1 || rejected != 0 {
			t.Errorf("run %s delivered twice: %d received and %d rejected events, want 1 and 0:\n%s", runID, received, rejected, describe(e.obs.RunEvents(runID)))
		}

		// A copy of a run that has ended (here: denied) is a replay: refused.
		envelopes := make(chan []byte, 4)
		c, err := harness.Connect(t, e.broker, harness.ControlPlaneTLS(t, e.cp.Dir), nil)
		if err != nil {
			t.Fatal(err)
		}
		harness.Subscribe(t, c, mqtttopic.Runs("pool-a"), func(_ mqtt.Client, m mqtt.Message) { envelopes <- m.Payload() })
		denied, r := e.submit(t, harness.Spec("Vault", "team:sec", "frozen"))
		if r.Code != 0 {
			t.Fatalf("hangarctl run submit: %s", r)
		}
		var payload []byte
		select {
		case payload = <-envelopes:
		case <-time.After(wait):
			t.Fatal("the envelope was not seen on the runs topic")
		}
		e.obs.WaitEvent(wait, "denied event of "+denied, isKind(denied, "denied"))
		harness.Publish(t, c, mqtttopic.Runs("pool-a"), payload)
		e.obs.WaitEvent(wait, "replayed rejection of "+denied, func(ev *eventv1.Event) bool {
			return ev.GetRunId() == denied && ev.GetRejected().GetReason() == eventv1.RejectReason_REJECT_REASON_REPLAYED
		})
		e.expectSequence(t, denied, "received", "denied")
	})

	t.Run("commands are answered and applied once", func(t *testing.T) {
		// No executor here: an admitted run stays queued.
		queued, r := e.submit(t, harness.Spec("Web", "team:web"))
		if r.Code != 0 {
			t.Fatalf("hangarctl run submit: %s", r)
		}
		e.expectAdmitted(t, queued)
		for _, tc := range []struct {
			args []string
			code int
			want string
		}{
			{[]string{"run", "cancel", "e2e-no-such-run"}, 1, "(unknown run): run e2e-no-such-run is unknown to this gateway"},
			{[]string{"run", "confirm", queued}, 1, "(not waiting for confirmation): run " + queued + " is queued"},
			{[]string{"worker", "drain", "no-such-executor"}, 1, "(unknown worker)"},
			{[]string{"run", "cancel", queued}, 0, "applied by gateway " + e.workerID + ": run " + queued + " was queued; it ends as stopped"},
			{[]string{"run", "cancel", queued}, 1, "(already finished): run " + queued + " has already ended"},
		} {
			r := harness.Run(t, 2*time.Minute, nil, e.cp.Ctl, append(append(append([]string{}, tc.args[:2]...), "--dir", e.cp.Dir, "--pool", "pool-a", "--timeout", "60s"), tc.args[2:]...)...)
			if r.Code != tc.code || !strings.Contains(r.Stdout+r.Stderr, tc.want) || !strings.Contains(r.Stdout, "command cmd-") {
				t.Errorf("hangarctl %s: want exit %d and %q: %s", strings.Join(tc.args, " "), tc.code, tc.want, r)
			}
		}
		fin := e.obs.WaitEvent(wait, "finished event of "+queued, func(ev *eventv1.Event) bool {
			return ev.GetRunId() == queued && ev.GetFinished() != nil
		})
		if fin.GetFinished().GetOutcome() != eventv1.Outcome_OUTCOME_STOPPED {
			t.Errorf("cancelled queued run: %v", fin)
		}

		// A signed command replayed (here: published again as captured) is
		// refused, and not applied again.
		cmds := make(chan []byte, 4)
		c, err := harness.Connect(t, e.broker, harness.ControlPlaneTLS(t, e.cp.Dir), nil)
		if err != nil {
			t.Fatal(err)
		}
		harness.Subscribe(t, c, mqtttopic.Commands("pool-a"), func(_ mqtt.Client, m mqtt.Message) { cmds <- m.Payload() })
		if r := harness.Run(t, 2*time.Minute, nil, e.cp.Ctl, "pool", "cycle", "--dir", e.cp.Dir, "--timeout", "60s", "pool-a"); r.Code != 0 {
			t.Fatalf("hangarctl pool cycle: %s", r)
		}
		var payload []byte
		select {
		case payload = <-cmds:
		case <-time.After(wait):
			t.Fatal("the command was not seen on the commands topic")
		}
		harness.Publish(t, c, mqtttopic.Commands("pool-a"), payload)
		ev := e.obs.WaitEvent(wait, "answer to the replayed command", func(ev *eventv1.Event) bool {
			return strings.HasSuffix(ev.GetEventId(), "/"+e.workerID+"/replayed")
		})
		if res := ev.GetCommandResult(); res.GetStatus() != eventv1.CommandStatus_COMMAND_STATUS_REFUSED ||
			res.GetRefusal() != eventv1.CommandRefusal_COMMAND_REFUSAL_REPLAYED {
			t.Errorf("answer to a replayed command: %v", ev)
		}
	})

	t.Run("heartbeats carry the metadata", func(t *testing.T) {
		isOurs := func(hb *eventv1.Heartbeat) bool {
			return hb.GetWorkerId() == e.workerID && hb.GetState() != eventv1.WorkerState_WORKER_STATE_LOST
		}
		first := e.obs.WaitHeartbeat(wait, "heartbeat", isOurs)
		if first.GetPoolId() != "pool-a" || first.GetMetadata()["zone"] != "test-a" || first.GetVersion() == "" {
			t.Errorf("heartbeat: want pool-a, metadata zone=test-a and a version; got %v", first)
		}
		// Heartbeats repeat (every second here).
		e.obs.WaitHeartbeat(wait, "a later heartbeat", func(hb *eventv1.Heartbeat) bool {
			return isOurs(hb) && hb.GetTimeUnixMs() > first.GetTimeUnixMs()
		})
	})

	t.Run("pool-b cannot read pool-a's runs", func(t *testing.T) {
		tokB := harness.DecodeToken(t, tokenB)
		keyPEM, err := os.ReadFile(keyB)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var leaked []string
		marker := make(chan struct{}, 1)
		poolB, err := harness.Connect(t, tokB.Broker, harness.TLSFromPEM(t, []byte(tokB.CertificatePEM), keyPEM, []byte(tokB.BrokerCAPEM)), nil)
		if err != nil {
			t.Fatalf("pool-b cannot connect with its own token and key: %v", err)
		}
		code := harness.Subscribe(t, poolB, mqtttopic.Runs("pool-a"), func(_ mqtt.Client, m mqtt.Message) {
			mu.Lock()
			defer mu.Unlock()
			leaked = append(leaked, m.Topic())
		})
		switch {
		case kind == "embedded" && code != 0x80:
			t.Errorf("embedded broker: pool-b's subscription to %s: SUBACK 0x%02x, want 0x80", mqtttopic.Runs("pool-a"), code)
		case code != 0x80:
			// Mosquitto grants it and delivers nothing (see cmd/hangarctl/internal/mosquitto).
			t.Logf("mosquitto: subscription granted (0x%02x); checking nothing is delivered on it", code)
		}
		// Its own runs topic works: a marker published there after a pool-a run
		// arrives after anything the broker would have delivered of that run.
		if code := harness.Subscribe(t, poolB, mqtttopic.Runs("pool-b"), func(mqtt.Client, mqtt.Message) {
			select {
			case marker <- struct{}{}:
			default:
			}
		}); code > 2 {
			t.Fatalf("pool-b's subscription to its own runs refused: 0x%02x", code)
		}
		runID, r := e.submit(t, harness.Spec("Web", "team:web"))
		if r.Code != 0 {
			t.Fatalf("hangarctl run submit: %s", r)
		}
		e.expectAdmitted(t, runID)
		cpClient, err := harness.Connect(t, e.broker, harness.ControlPlaneTLS(t, e.cp.Dir), nil)
		if err != nil {
			t.Fatalf("control plane: %v", err)
		}
		harness.Publish(t, cpClient, mqtttopic.Runs("pool-b"), []byte("marker"))
		select {
		case <-marker:
		case <-time.After(wait):
			t.Fatalf("pool-b did not receive the marker on its own runs topic within %s", wait)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(leaked) > 0 {
			t.Errorf("pool-b received %d message(s) of pool-a's runs: %q", len(leaked), leaked)
		}
	})

	t.Run("clients without a certificate of the CA cannot connect", func(t *testing.T) {
		foreignCert, foreignKey := foreignClientCert(t, mqtttopic.ControlPlaneCN)
		caPEM, err := os.ReadFile(e.cp.CAFile())
		if err != nil {
			t.Fatal(err)
		}
		for name, conf := range map[string]*tls.Config{
			"certificate of another CA": harness.TLSFromPEM(t, foreignCert, foreignKey, caPEM),
			"no certificate":            harness.TLSFromPEM(t, nil, nil, caPEM),
		} {
			t.Run(name, func(t *testing.T) {
				_, err := harness.Connect(t, e.broker, conf, nil)
				if err == nil {
					t.Fatalf("connected to %s with %s", e.broker, name)
				}
				if !refusedTLS.MatchString(err.Error()) {
					t.Errorf("connecting with %s: error %q, want a TLS refusal (certificate required, unknown authority, bad certificate, EOF, reset)", name, err)
				}
				t.Logf("refused as expected: %v", err)
			})
		}
	})

	t.Run("metrics", func(t *testing.T) {
		gm := scrape(t, "http://"+e.gw.DebugAddr+"/metrics")
		if v := metricValue(gm, `hangar_gateway_runs_total{result="admitted"}`); v < 3 {
			t.Errorf(`hangar_gateway_runs_total{result="admitted"} = %v, want >= 3`, v)
		}
		if v := metricValue(gm, `hangar_gateway_runs_total{result="denied"}`); v < 1 {
			t.Errorf(`hangar_gateway_runs_total{result="denied"} = %v, want >= 1`, v)
		}
		for _, reason := range []string{"bad_signature", "decrypt_failed", "wrong_pool", "expired", "oversize", "malformed", "replayed"} {
			if v := metricValue(gm, `hangar_gateway_envelopes_rejected_total{reason="`+reason+`"}`); v < 1 {
				t.Errorf(`hangar_gateway_envelopes_rejected_total{reason=%q} = %v, want >= 1`, reason, v)
			}
		}
		for _, line := range strings.Split(gm, "\n") {
			if line != "" && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "hangar_") && !strings.HasPrefix(line, "go_") &&
				!strings.HasPrefix(line, "process_") && !strings.HasPrefix(line, "promhttp_") && !strings.HasPrefix(line, "grpc_") {
				t.Errorf("gateway metric without the hangar_ prefix: %s", line)
			}
		}
		pm := scrape(t, "http://"+e.policy.DebugAddr+"/metrics")
		if !regexp.MustCompile(`(?m)^hangar_policy_decision_seconds_count(\{[^}]*\})? [1-9]`).MatchString(pm) {
			t.Errorf("policy /metrics: no hangar_policy_decision_seconds with decisions counted:\n%s", grepLines(pm, "hangar_policy"))
		}
	})

	t.Run("gateway start errors name the variable", func(t *testing.T) {
		e.startErrors(t, gatewayBin, tokenA, keyA, keyB)
	})

	// Last: this one kills the gateway.
	t.Run("last will says the gateway is lost", func(t *testing.T) {
		e.gw.Kill()
		hb := e.obs.WaitHeartbeat(wait, "Last Will heartbeat (WORKER_STATE_LOST)", func(hb *eventv1.Heartbeat) bool {
			return hb.GetState() == eventv1.WorkerState_WORKER_STATE_LOST
		})
		if hb.GetPoolId() != "pool-a" || hb.GetWorkerId() != e.workerID || hb.GetMetadata()["zone"] != "test-a" {
			t.Errorf("Last Will: want pool-a, worker %s, zone=test-a; got %v", e.workerID, hb)
		}
	})
}

// refusedTLS matches the ways a TLS handshake refused by the server shows on the
// client: Go sends no certificate if none is from a CA the server lists, so the
// error is often "certificate required" rather than "unknown authority".
var refusedTLS = regexp.MustCompile(`(?i)certificate required|unknown authority|unknown certificate authority|bad certificate|EOF|reset|broken pipe|handshake failure`)

func (e *foundationEnv) expectAdmitted(t *testing.T, runID string) {
	t.Helper()
	e.obs.WaitEvent(wait, "admitted event of "+runID, isKind(runID, "admitted"))
	e.obs.WaitEvent(wait, "received event of "+runID, isKind(runID, "received"))
	e.expectSequence(t, runID, "received", "admitted")
}

// expectSequence checks the run's non-rejection events are exactly kinds, with
// sequences 1, 2, ..., deterministic event ids, this pool and this gateway.
func (e *foundationEnv) expectSequence(t *testing.T, runID string, kinds ...string) {
	t.Helper()
	var evs []*eventv1.Event
	for _, ev := range e.obs.RunEvents(runID) {
		if ev.GetRejected() == nil {
			evs = append(evs, ev)
		}
	}
	if len(evs) != len(kinds) {
		t.Fatalf("run %s: events\n%swant %v", runID, describe(evs), kinds)
	}
	for i, ev := range evs {
		seq := uint64(i + 1)
		if !isKind(runID, kinds[i])(ev) || ev.GetSequence() != seq || ev.GetEventId() != fmt.Sprintf("%s/%d", runID, seq) ||
			ev.GetPoolId() != "pool-a" || ev.GetWorkerId() != e.workerID || ev.GetTimeUnixMs() == 0 {
			t.Errorf("run %s: event %d is %s (pool %q, worker %q), want %s with sequence %d and id %s/%d from pool-a, worker %s",
				runID, i, harness.DescribeEvent(ev), ev.GetPoolId(), ev.GetWorkerId(), kinds[i], seq, runID, seq, e.workerID)
		}
	}
}

func (e *foundationEnv) expectGatewayRunning(t *testing.T) {
	t.Helper()
	select {
	case <-e.gw.Done():
		t.Fatalf("the gateway exited (code %d)", e.gw.ExitCode())
	default:
	}
	resp, err := http.Get("http://" + e.gw.DebugAddr + "/readyz")
	if err != nil {
		t.Fatalf("gateway /readyz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("gateway /readyz: %s", resp.Status)
	}
}

// startErrors starts gateways with a bad configuration: each must exit non-zero
// with a message naming the variable at fault.
func (e *foundationEnv) startErrors(t *testing.T, gatewayBin, tokenA, keyA, keyB string) {
	cases := []struct {
		name    string
		token   *string // nil: unset
		key     string
		varName string
		extra   []string
	}{
		{"missing HANGAR_TOKEN", nil, keyA, "HANGAR_TOKEN", nil},
		{"malformed HANGAR_TOKEN", ptr("bm90IGEgdG9rZW4="), keyA, "HANGAR_TOKEN", nil},
		{"key not matching the token", &tokenA, keyB, "HANGAR_POOL_PRIVATE_KEY", nil},
		{"a policy certificate", &tokenA, keyA, "HANGAR_TLS", e.tls.Env(t, "policy", "policy")},
		{"plaintext on every interface", &tokenA, keyA, "HANGAR_INSECURE_PLAINTEXT", []string{"HANGAR_GATEWAY_GRPC_ADDR=0.0.0.0:0", "HANGAR_POLICY_ADDR=127.0.0.1:1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env, _, _, _ := harness.GatewayEnv(t, "", harness.KeyEnv(t, c.key), e.policy.GRPCAddr, append([]string{"HANGAR_WORKER_ID=gw-bad"}, c.extra...)...)
			env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "HANGAR_TOKEN=") })
			if c.token != nil {
				env = append(env, "HANGAR_TOKEN="+*c.token)
			} else if _, set := os.LookupEnv("HANGAR_TOKEN"); set {
				t.Fatal("HANGAR_TOKEN is set in the test's environment")
			}
			p := harness.Start(t, "gateway-"+strings.ReplaceAll(c.name, " ", "-"), env, gatewayBin)
			if code := p.WaitExit(wait); code == 0 {
				t.Errorf("gateway with %s exited 0, want non-zero", c.name)
			}
			if !strings.Contains(p.Output(), c.varName) {
				t.Errorf("gateway with %s: output does not name %s:\n%s", c.name, c.varName, p.Output())
			}
			if strings.Contains(p.Output(), "PRIVATE KEY") {
				t.Errorf("gateway with %s: output shows key material:\n%s", c.name, p.Output())
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func isKind(runID, kind string) func(*eventv1.Event) bool {
	return func(ev *eventv1.Event) bool {
		if ev.GetRunId() != runID {
			return false
		}
		switch kind {
		case "received":
			return ev.GetReceived() != nil
		case "admitted":
			return ev.GetAdmitted() != nil
		case "denied":
			return ev.GetDenied() != nil
		}
		return false
	}
}

func eventIDs(evs []*eventv1.Event) map[string]bool {
	m := map[string]bool{}
	for _, ev := range evs {
		m[ev.GetEventId()] = true
	}
	return m
}

func describe(evs []*eventv1.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		b.WriteString("  " + harness.DescribeEvent(ev) + "\n")
	}
	return b.String()
}

func newRunID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "e2e-" + hex.EncodeToString(b[:])
}

// foreignClientCert is a client certificate with CN cn from a CA the broker does
// not know.
func foreignClientCert(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "foreign CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(b)
}

// metricValue is the value of the sample named exactly series (name{labels}), or
// -1 if absent.
func metricValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

func grepLines(text, substr string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
