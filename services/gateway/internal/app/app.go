// Package app wires the gateway: the MQTT link to the control plane, the intake
// of run envelopes, the policy client, the dispatcher executors attach to, the
// event outbox and the heartbeats, under one context, shut down in order.
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	policyv1 "github.com/hangar-dev/hangar/gen/go/hangar/policy/v1"
	workv1 "github.com/hangar-dev/hangar/gen/go/hangar/work/v1"
	"github.com/hangar-dev/hangar/platform/dial"
	"github.com/hangar-dev/hangar/platform/mqtttopic"
	"github.com/hangar-dev/hangar/platform/runcred"
	"github.com/hangar-dev/hangar/platform/runenvelope"
	"github.com/hangar-dev/hangar/platform/serve"
	"github.com/hangar-dev/hangar/platform/telemetry"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
	"github.com/hangar-dev/hangar/services/gateway/internal/commands"
	"github.com/hangar-dev/hangar/services/gateway/internal/config"
	"github.com/hangar-dev/hangar/services/gateway/internal/dispatch"
	"github.com/hangar-dev/hangar/services/gateway/internal/events"
	"github.com/hangar-dev/hangar/services/gateway/internal/intake"
	"github.com/hangar-dev/hangar/services/gateway/internal/link"
	"github.com/hangar-dev/hangar/services/gateway/internal/runstore"
	"github.com/hangar-dev/hangar/services/gateway/internal/seen"
)

// Version is reported in heartbeats.
const Version = "0.1.0"

// Run runs the gateway until ctx is done.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	reg := telemetry.NewRegistry("gateway")
	tel, err := telemetry.Setup(ctx, cfg.Telemetry)
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()

	poolID := cfg.Token.PoolID
	store, err := seen.Open(cfg.DataDir, nil)
	if err != nil {
		return err
	}
	defer store.Close()

	// Mutual TLS inside the pool (ADR 0008): executors attach with executor
	// certificates, the policy is reached as a policy certificate.
	poolTLS, err := tlsconfig.LoadPoolFiles(cfg.TLSCA, cfg.TLSCert, cfg.TLSKey, tlsconfig.RoleGateway)
	if err != nil {
		return fmt.Errorf("HANGAR_TLS_*: %w", err)
	}
	var serverTLS, policyTLS *tls.Config
	var creds dispatch.CredentialIssuer // nil without TLS (not a nil *runcred.Issuer)
	if poolTLS != nil {
		if poolTLS.Identity.Pool != poolID {
			return fmt.Errorf("HANGAR_TLS_CERT: the certificate is for pool %q, HANGAR_TOKEN for pool %q", poolTLS.Identity.Pool, poolID)
		}
		serverTLS, policyTLS = poolTLS.ServerConfig(), poolTLS.ClientConfig(tlsconfig.RolePolicy)
		issuer, err := runcred.NewIssuer(poolTLS, cfg.LogCredentialTTL)
		if err != nil {
			return err
		}
		creds = issuer
		log.Info("in-pool gRPC uses mutual TLS", "identity", poolTLS.Identity.String())
	}
	policyConn, err := dial.Dial(cfg.PolicyAddr, dial.Security{TLS: policyTLS, InsecurePlaintext: cfg.InsecurePlaintext}, tel)
	if err != nil {
		return fmt.Errorf("HANGAR_POLICY_ADDR: %w", err)
	}
	defer policyConn.Close()

	srv, err := serve.New(serve.Config{ServiceName: "gateway", GRPCAddr: cfg.GRPCAddr, DebugAddr: cfg.DebugAddr, TLS: serverTLS,
		InsecurePlaintext: cfg.InsecurePlaintext, Access: serve.Access{
			workv1.WorkService_Attach_FullMethodName: {tlsconfig.RoleExecutor},
		}},
		serve.Deps{Logger: log, Registry: reg, Telemetry: tel})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	log.Info("gateway listening", "pool_id", poolID, "grpc", srv.GRPCAddr().String(), "debug", srv.DebugAddr().String())

	// Messages from the broker wait here for the intake workers; the MQTT client
	// does not acknowledge them until a worker has recorded them.
	inbox := make(chan link.Message, cfg.IntakeWorkers*4)

	will, _ := proto.Marshal(&eventv1.Heartbeat{PoolId: poolID, WorkerId: cfg.WorkerID, TimeUnixMs: time.Now().UnixMilli(),
		State: eventv1.WorkerState_WORKER_STATE_LOST, Metadata: cfg.Metadata, Version: Version})
	clientTLS, err := cfg.Token.ClientTLS(cfg.PoolKey)
	if err != nil {
		return fmt.Errorf("HANGAR_TOKEN: %w", err)
	}
	clientID, shareGroup := link.SessionNames(cfg.PoolKey, poolID, cfg.WorkerID)
	runsTopic := mqtttopic.Runs(poolID)
	if cfg.SharedSubscription {
		runsTopic = mqtttopic.SharedRuns(shareGroup, poolID)
	}
	log.Info("connecting to broker", "broker", cfg.Token.Broker, "runs", runsTopic)
	mq, err := link.Dial(ctx, link.Config{
		Broker: cfg.Token.Broker, ClientID: clientID, TLS: clientTLS, MaxPacketBytes: cfg.MaxEnvelopeBytes + link.PacketOverhead,
		Subscriptions: []string{runsTopic, mqtttopic.Commands(poolID)},
		WillTopic:     mqtttopic.Heartbeats(poolID), WillPayload: will,
		Logger: log, Registry: reg,
	}, func(m link.Message) {
		select {
		case inbox <- m:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return err
	}
	srv.AddReadinessCheck("mqtt", func(context.Context) error {
		if !mq.Connected() {
			return errors.New("not connected to the broker")
		}
		return nil
	})

	journal, recovered, err := events.OpenJournal(cfg.DataDir)
	if err != nil {
		return err
	}
	defer journal.Close()
	outbox := events.NewOutbox(mq, poolID, cfg.WorkerID, log, reg, journal, recovered)
	pubDER, err := x509.MarshalPKIXPublicKey(&cfg.PoolKey.PublicKey)
	if err != nil {
		return fmt.Errorf("pool public key: %w", err)
	}
	runs, err := runstore.Open(cfg.DataDir)
	if err != nil {
		return err
	}
	disp := dispatch.New(dispatch.Config{PoolID: poolID, Credentials: creds, LeaseDuration: cfg.LeaseDuration, CancelGrace: cfg.CancelGrace, PoolPublicKey: pubDER, PoolKey: cfg.PoolKey, Logger: log, Registry: reg, Store: runs}, outbox)
	workv1.RegisterWorkServiceServer(srv.GRPC(), disp)

	opener := &runenvelope.Opener{PoolID: poolID, PoolKey: cfg.PoolKey, VerifyKey: cfg.VerifyKey,
		MaxSize: cfg.MaxEnvelopeBytes, ClockSkew: cfg.ClockSkew}
	disp.Recover(dispatch.EnvelopeReopener(opener))
	in := intake.New(intake.Deps{
		Opener: opener, Seen: store, Policy: policyv1.NewPolicyServiceClient(policyConn), Events: outbox, Queue: disp,
		Metadata: cfg.Metadata, PolicyTimeout: cfg.PolicyTimeout, Tracer: tel.Tracer("hangar/gateway"),
		Propagator: tel.Propagator(), Logger: log, Registry: reg,
	})
	commandIDs, err := seen.OpenFile(cfg.DataDir, "seen-commands.log", nil)
	if err != nil {
		return err
	}
	defer commandIDs.Close()
	cmds := commands.New(commands.Deps{Opener: opener, Dispatcher: disp, Runs: store, IDs: commandIDs, Answers: outbox, Logger: log, Registry: reg})

	// The outbox outlives the other parts, so that their last events get out.
	outboxCtx, stopOutbox := context.WithCancel(context.Background())
	outboxDone := make(chan struct{})
	go func() { _ = outbox.Serve(outboxCtx); close(outboxDone) }()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(gctx) })
	g.Go(func() error { return disp.Serve(gctx) })
	g.Go(func() error { return heartbeats(gctx, cfg, mq, disp, log) })
	g.Go(func() error {
		select {
		case <-mq.Fatal():
			return mq.Err()
		case <-gctx.Done():
			return nil
		}
	})
	for range cfg.IntakeWorkers {
		g.Go(func() error {
			for {
				select {
				case <-gctx.Done():
					return nil
				case m := <-inbox:
					handle := in.Handle
					switch {
					case m.Oversize != nil:
						handle = func(context.Context, []byte) error { in.Oversize(m.Oversize.Size, m.Oversize.SHA256); return nil }
					case m.Topic == mqtttopic.Commands(poolID):
						handle = func(_ context.Context, payload []byte) error { return cmds.Handle(payload) }
					}
					if err := handle(gctx, m.Payload); err != nil {
						// Not acknowledged: the broker redelivers it.
						log.Error("message not recorded; it will be redelivered", "topic", m.Topic, "err", err)
						continue
					}
					m.Ack()
				}
			}
		})
	}
	err = g.Wait()

	// Ordered shutdown: gRPC and intake have stopped; flush events, then leave.
	select {
	case <-outbox.Idle():
	case <-time.After(5 * time.Second):
		log.Warn("some events were not acknowledged by the broker before shutdown")
	}
	stopOutbox()
	<-outboxDone
	mq.Close()
	return err
}

func heartbeats(ctx context.Context, cfg *config.Config, mq *link.Link, disp *dispatch.Dispatcher, log *slog.Logger) error {
	t := time.NewTicker(cfg.HeartbeatInterval)
	defer t.Stop()
	topic := mqtttopic.Heartbeats(cfg.Token.PoolID)
	for {
		queued, leased := disp.Counts()
		state := eventv1.WorkerState_WORKER_STATE_IDLE
		if queued+leased > 0 {
			state = eventv1.WorkerState_WORKER_STATE_BUSY
		}
		hb, _ := proto.Marshal(&eventv1.Heartbeat{
			PoolId: cfg.Token.PoolID, WorkerId: cfg.WorkerID, TimeUnixMs: time.Now().UnixMilli(), State: state,
			Metadata: cfg.Metadata, Executors: disp.Executors(), Version: Version,
		})
		if mq.Connected() {
			pctx, cancel := context.WithTimeout(ctx, cfg.HeartbeatInterval)
			if err := mq.Publish(pctx, topic, hb); err != nil && ctx.Err() == nil {
				log.Warn("heartbeat not published", "err", err)
			}
			cancel()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// LogLevel parses a HANGAR_LOG_LEVEL value.
func LogLevel(s string) slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(s))
	return l
}

// NewLogger returns the service's JSON logger on stderr.
func NewLogger(level string) *slog.Logger {
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: LogLevel(level)})).With("service", "gateway")
}
