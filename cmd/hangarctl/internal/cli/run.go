package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/controlplane"
	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/cpdir"
	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/platform/dial"
	"github.com/hangar-dev/hangar/platform/mqtttopic"
	"github.com/hangar-dev/hangar/platform/runenvelope"
	"github.com/hangar-dev/hangar/platform/telemetry"
)

// corruptions are the ways `run submit --corrupt` damages an envelope, to test a
// pool's defences. Each must be refused by the gateway with the named reason.
var corruptions = []string{"signature", "ciphertext", "wrong-pool", "expired", "oversize", "malformed", "unknown-field", "replay"}

func runSubmit(ctx context.Context, e env) error {
	fs := newFlags("run submit", e)
	dir := fs.String("dir", "", "control-plane directory (hangarctl ca init)")
	pool := fs.String("pool", "", "pool name")
	specFile := fs.String("spec", "", "run spec file (JSON, see docs/RUNSPEC.md)")
	follow := fs.Bool("follow", false, "print the run's events and live log until it ends; exit 0 only if it finished successfully")
	runID := fs.String("run-id", "", "run id (default: a random one)")
	ttl := fs.Duration("ttl", 15*time.Minute, "how long the envelope stays acceptable")
	logship := fs.String("logship", "", "logship gRPC address for the live log with --follow (host:port)")
	timeout := fs.Duration("timeout", 0, "give up following after this long (0: never)")
	otlp := fs.String("otlp", os.Getenv("HANGAR_OTLP_ENDPOINT"), "OTLP/gRPC endpoint for the submit span (default $HANGAR_OTLP_ENDPOINT)")
	corrupt := fs.String("corrupt", "", "damage the envelope to test the pool's defences: "+strings.Join(corruptions, ", "))
	opTLS := addOperatorTLS(fs)
	if err := parseFlags(fs, e, 0); err != nil {
		return err
	}
	var logshipSec dial.Security
	if *follow && *logship != "" {
		var err error
		if logshipSec, err = opTLS.security(*logship); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	if *dir == "" || *pool == "" || *specFile == "" {
		return fmt.Errorf("%w: --dir, --pool and --spec are required", errUsage)
	}
	if *corrupt != "" && !slices.Contains(corruptions, *corrupt) {
		return fmt.Errorf("%w: --corrupt %q is not one of %s", errUsage, *corrupt, strings.Join(corruptions, ", "))
	}
	spec, err := LoadSpec(*specFile)
	if err != nil {
		return err
	}
	d, err := cpdir.Open(*dir)
	if err != nil {
		return err
	}
	p, err := d.Pool(*pool)
	if err != nil {
		return err
	}
	if *runID == "" {
		*runID = newRunID()
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}

	// The broker's session (TLS, MQTT connect) is set up while the envelope
	// is sealed, which it does not need.
	tlsConf, err := d.ClientTLS("")
	if err != nil {
		return err
	}
	type connected struct {
		conn *controlplane.Conn
		err  error
	}
	connCh := make(chan connected, 1)
	connectCtx, stopConnect := context.WithCancel(ctx)
	defer stopConnect()
	go func() {
		c, err := controlplane.Connect(connectCtx, p.Broker, tlsConf)
		connCh <- connected{c, err}
	}()
	defer func() {
		// Whatever happens below, the session is closed once it is up.
		stopConnect()
		if c := <-connCh; c.conn != nil {
			c.conn.Close()
		}
	}()
	var logConn *grpc.ClientConn
	if *follow && *logship != "" {
		if logConn, err = dial.Dial(*logship, logshipSec, nil); err != nil {
			return err
		}
		defer logConn.Close()
	}

	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "hangarctl", OTLPEndpoint: *otlp, Insecure: true})
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()
	ctx, span := tel.Tracer("hangar/hangarctl").Start(ctx, "hangarctl.submit")
	if !span.SpanContext().IsValid() {
		// No OTLP endpoint: hangarctl records no span, but the run still
		// gets a trace id of its own, which the pool's services record
		// theirs under.
		ctx = trace.ContextWithRemoteSpanContext(ctx, newSpanContext())
	}
	traceID := trace.SpanContextFromContext(ctx).TraceID().String()
	submitted := false
	defer func() {
		if !submitted {
			span.End()
		}
	}()

	key, err := d.SigningKey()
	if err != nil {
		return err
	}
	issued, envTTL := time.Now(), *ttl
	if *corrupt == "expired" {
		issued, envTTL = time.Now().Add(-2*time.Hour), time.Hour
	}
	if *corrupt == "oversize" {
		spec = proto.Clone(spec).(*runv1.RunSpec)
		spec.Env = append(spec.Env, &runv1.EnvVar{Name: "PADDING", Value: strings.Repeat("x", 2<<20)})
	}
	poolID := p.ID
	if *corrupt == "wrong-pool" {
		poolID = p.ID + "-other"
	}
	payload, err := runenvelope.Seal(runenvelope.SealParams{
		SigningKey: key, PoolKey: p.PublicKey, RunID: *runID, PoolID: poolID, Spec: spec,
		TraceContext: telemetry.Inject(ctx, tel.Propagator()), IssuedAt: issued, TTL: envTTL,
	})
	if err != nil {
		return err
	}
	if payload, err = damage(*corrupt, payload, key); err != nil {
		return err
	}

	c := <-connCh
	connCh <- c // for the deferred Close
	if c.err != nil {
		return c.err
	}
	conn := c.conn

	var f *follower
	if *follow {
		sum := sha256.Sum256(payload)
		f = newFollower(*runID, "envelope/"+hex.EncodeToString(sum[:]), e.stdout)
		if e.terminal != nil {
			f.live = newProgress(e.terminal, *runID, time.Now)
		}
		if err := conn.Subscribe(ctx, mqtttopic.Events(p.ID), f.event); err != nil {
			return err
		}
	}
	if err := conn.Publish(ctx, mqtttopic.Runs(p.ID), payload); err != nil {
		return err
	}
	if *corrupt == "replay" {
		if err := conn.Publish(ctx, mqtttopic.Runs(p.ID), payload); err != nil {
			return err
		}
	}
	if logConn != nil {
		// Logship's TLS handshake runs while the pool takes the run, off
		// the way to the publish (on a busy host the two would share the
		// CPU), and is done when the "started" event comes.
		logConn.Connect()
	}
	span.End()
	submitted = true
	_ = tel.ForceFlush(ctx)
	fmt.Fprintf(e.stdout, "run %s submitted to pool %s (trace %s)\n", *runID, p.Name, traceID)
	if !*follow {
		return nil
	}
	return f.wait(ctx, logConn, *corrupt == "replay")
}

// LoadSpec reads a run spec in its JSON form (protojson: field names as in the
// proto, unknown fields refused).
func LoadSpec(path string) (*runv1.RunSpec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("run spec: %w", err)
	}
	spec := &runv1.RunSpec{}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(b, spec); err != nil {
		return nil, fmt.Errorf("run spec %s: %w", path, err)
	}
	if spec.GetRunnerImage() == "" {
		return nil, fmt.Errorf("run spec %s: runner_image is required", path)
	}
	if spec.GetType() == runv1.RunType_RUN_TYPE_UNSPECIFIED {
		return nil, fmt.Errorf("run spec %s: type is required (RUN_TYPE_PROPOSED, RUN_TYPE_TRACKED or RUN_TYPE_TASK)", path)
	}
	return spec, nil
}

// damage applies a --corrupt kind to a valid SignedEnvelope payload.
func damage(kind string, payload []byte, key ed25519.PrivateKey) ([]byte, error) {
	switch kind {
	case "signature":
		se := &runv1.SignedEnvelope{}
		if err := proto.Unmarshal(payload, se); err != nil {
			return nil, err
		}
		se.Signature[0] ^= 0xff
		return proto.Marshal(se)
	case "ciphertext":
		// A validly signed envelope whose ciphertext was altered before signing:
		// only decryption can tell.
		se := &runv1.SignedEnvelope{}
		if err := proto.Unmarshal(payload, se); err != nil {
			return nil, err
		}
		env := &runv1.RunEnvelope{}
		if err := proto.Unmarshal(se.Envelope, env); err != nil {
			return nil, err
		}
		env.SealedSpec.Ciphertext[len(env.SealedSpec.Ciphertext)/2] ^= 0x01
		b, err := proto.Marshal(env)
		if err != nil {
			return nil, err
		}
		se.Envelope = b
		se.Signature = ed25519.Sign(key, append([]byte("hangar.run.v1\n"), b...))
		return proto.Marshal(se)
	case "malformed":
		return []byte("this is not a protobuf \xff\xff\xff\xff"), nil
	case "unknown-field":
		// Field 99, varint 1: a field this version of the contract does not know.
		return append(payload, 0x98, 0x06, 0x01), nil
	}
	return payload, nil
}

// follower prints a run's events in sequence order and its live log.
type follower struct {
	runID, envelopeEventID string
	out                    io.Writer
	live                   *progress // nil off a terminal

	mu       sync.Mutex
	seen     map[string]bool
	buffered map[uint64]*eventv1.Event
	next     uint64
	started  chan struct{}
	final    chan *eventv1.Event
	printMu  sync.Mutex
}

func newFollower(runID, envelopeEventID string, out io.Writer) *follower {
	return &follower{runID: runID, envelopeEventID: envelopeEventID, out: out, seen: map[string]bool{},
		buffered: map[uint64]*eventv1.Event{}, next: 1, started: make(chan struct{}), final: make(chan *eventv1.Event, 4)}
}

func (f *follower) event(payload []byte) {
	ev := &eventv1.Event{}
	if proto.Unmarshal(payload, ev) != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen[ev.GetEventId()] {
		return
	}
	switch {
	case ev.GetEventId() == f.envelopeEventID || (ev.GetRejected() != nil && ev.GetRunId() == f.runID):
		f.seen[ev.GetEventId()] = true
		f.print("rejected: %s: %s", runenvelope.ReasonName(ev.GetRejected().GetReason()), ev.GetRejected().GetMessage())
		f.final <- ev
		return
	case ev.GetRunId() != f.runID:
		return
	}
	f.seen[ev.GetEventId()] = true
	f.buffered[ev.GetSequence()] = ev
	for {
		e, ok := f.buffered[f.next]
		if !ok {
			return
		}
		delete(f.buffered, f.next)
		f.next++
		f.show(e)
	}
}

func (f *follower) show(ev *eventv1.Event) {
	switch k := ev.Kind.(type) {
	case *eventv1.Event_Received:
		f.live.setPhase("received")
		f.print("received by pool %s (gateway %s)", ev.GetPoolId(), ev.GetWorkerId())
	case *eventv1.Event_Admitted:
		f.live.setPhase("queued")
		f.print("admitted: queued for an executor")
	case *eventv1.Event_Denied:
		f.print("denied by the run-initialization policy:")
		for _, m := range k.Denied.GetMessages() {
			f.print("  - %s", m)
		}
		f.final <- ev
	case *eventv1.Event_Started:
		f.live.setPhase("started")
		f.print("started on executor %s", k.Started.GetExecutorId())
		select {
		case <-f.started:
		default:
			close(f.started)
		}
	case *eventv1.Event_Phase:
		f.live.setPhase("phase " + k.Phase.GetPhase())
		f.print("phase %s", k.Phase.GetPhase())
	case *eventv1.Event_Unconfirmed:
		f.print("unconfirmed: planned, waiting for confirmation (state %s)", k.Unconfirmed.GetStateKey())
		f.final <- ev
	case *eventv1.Event_Finished:
		r := k.Finished
		line := fmt.Sprintf("%s (exit code %d)", outcomeName(r.GetOutcome()), r.GetExitCode())
		if r.GetReason() != "" {
			line += ": " + r.GetReason()
		}
		f.print("%s", line)
		if r.GetLogKey() != "" {
			f.print("log stored at s3 key %s", r.GetLogKey())
		}
		f.final <- ev
	}
}

func (f *follower) print(format string, args ...any) {
	f.printMu.Lock()
	defer f.printMu.Unlock()
	f.live.write(f.out, fmt.Appendf(nil, "[event] "+format+"\n", args...), false)
}

// wait follows until the run's final event, with its live log from logship
// over logConn (none when nil).
func (f *follower) wait(ctx context.Context, logConn *grpc.ClientConn, replay bool) error {
	defer f.live.stop()
	tailDone := make(chan struct{})
	if logConn != nil {
		go func() {
			defer close(tailDone)
			select {
			case <-f.started:
			case <-ctx.Done():
				return
			}
			if err := f.tail(ctx, logConn); err != nil && ctx.Err() == nil {
				f.print("live log unavailable: %v", err)
			}
		}()
	} else {
		close(tailDone)
	}
	var final *eventv1.Event
	for final == nil {
		select {
		case ev := <-f.final:
			if ev.GetRejected() != nil && replay && ev.GetRejected().GetReason() == eventv1.RejectReason_REJECT_REASON_REPLAYED {
				// The second copy was refused as it should be; keep following the first.
				continue
			}
			final = ev
		case <-ctx.Done():
			return fmt.Errorf("following run %s: %w", f.runID, ctx.Err())
		}
	}
	if final.GetFinished() != nil {
		select {
		case <-tailDone:
		case <-time.After(30 * time.Second):
		}
	}
	switch {
	case final.GetFinished().GetOutcome() == eventv1.Outcome_OUTCOME_FINISHED:
		return nil
	case final.GetFinished() != nil:
		return exitCodeError{code: 1, msg: "run " + f.runID + " " + outcomeName(final.GetFinished().GetOutcome())}
	case final.GetDenied() != nil:
		return exitCodeError{code: 1, msg: "run " + f.runID + " denied"}
	case final.GetUnconfirmed() != nil:
		return exitCodeError{code: 3, msg: "run " + f.runID + " waits for confirmation"}
	default:
		return exitCodeError{code: 1, msg: "envelope rejected: " + runenvelope.ReasonName(final.GetRejected().GetReason())}
	}
}

// notOpenRetry is how soon tail asks again while logship does not know the
// run yet (the executor opens its log as it takes the run, about when the
// "started" event comes), and notOpenRetries how often, before the usual
// pace of retries applies.
const (
	notOpenRetry   = 20 * time.Millisecond
	notOpenRetries = 100
)

// tail prints the run's live log from logship, over conn (as an operator,
// mutual TLS, or, where allowed, plaintext).
func (f *follower) tail(ctx context.Context, conn *grpc.ClientConn) error {
	c := logsv1.NewLogServiceClient(conn)
	var offset uint64
	notOpen := 0
	for attempt := 0; ; attempt++ {
		st, err := c.Tail(ctx, &logsv1.TailRequest{RunId: f.runID, Offset: offset}, grpc.WaitForReady(true))
		if err == nil {
			for {
				m, rerr := st.Recv()
				if rerr != nil {
					err = rerr
					break
				}
				f.printMu.Lock()
				f.live.write(f.out, m.GetData(), true)
				f.printMu.Unlock()
				offset = m.GetOffset() + uint64(len(m.GetData()))
				if m.GetEnd() {
					return nil
				}
			}
		}
		if ctx.Err() != nil || permanent(err) {
			return err
		}
		delay := 200 * time.Millisecond
		if status.Code(err) == codes.NotFound && offset == 0 && notOpen < notOpenRetries {
			// Not a failure: the log is not open yet.
			notOpen++
			attempt--
			delay = notOpenRetry
		}
		if attempt > 50 {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// permanent reports a Tail error that retrying cannot cure: a refused
// identity, or a handshake that failed on certificates.
func permanent(err error) bool {
	switch status.Code(err) {
	case codes.PermissionDenied, codes.Unauthenticated:
		return true
	case codes.Unavailable:
		return strings.Contains(err.Error(), "certificate") || strings.Contains(err.Error(), "tls:")
	}
	return false
}

func runCancel(ctx context.Context, e env) error {
	fs := newFlags("run cancel", e)
	dir := fs.String("dir", "", "control-plane directory")
	pool := fs.String("pool", "", "pool name")
	wait := answerTimeoutFlag(fs)
	if err := parseFlags(fs, e, 1); err != nil {
		return err
	}
	if *dir == "" || *pool == "" || fs.NArg() != 1 {
		return fmt.Errorf("%w: usage: hangarctl run cancel --dir DIR --pool NAME RUN_ID", errUsage)
	}
	return sendCommand(ctx, *dir, *pool, &eventv1.Command{Kind: &eventv1.Command_Cancel{Cancel: &eventv1.CancelRun{RunId: fs.Arg(0)}}}, *wait, e.stdout)
}

// newSpanContext is a new, sampled span context with random ids.
func newSpanContext() trace.SpanContext {
	var tid trace.TraceID
	var sid trace.SpanID
	_, _ = rand.Read(tid[:])
	_, _ = rand.Read(sid[:])
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
}

func newRunID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "run-" + hex.EncodeToString(b[:])
}

func outcomeName(o eventv1.Outcome) string {
	return strings.ToLower(strings.TrimPrefix(o.String(), "OUTCOME_"))
}
