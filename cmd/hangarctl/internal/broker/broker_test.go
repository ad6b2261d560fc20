package broker_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/broker"
	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/broker/brokertest"
	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/mosquitto"
)

const (
	cp      = "hangar-control-plane"
	wait    = 5 * time.Second
	quietly = 300 * time.Millisecond
)

// target is a running broker under test.
type target struct {
	pki  *brokertest.PKI
	addr string
	// restart stops the broker and starts it again on the same address with the
	// same session store; nil if sessions do not survive a restart.
	restart func(t *testing.T)
	// strict is true for the embedded broker, which refuses at SUBSCRIBE or
	// CONNECT what Mosquitto's ACL file can only filter at delivery: a refused
	// subscription (Mosquitto grants it and delivers nothing it may not read), a
	// Last Will to a forbidden topic (Mosquitto drops the will), and a client id
	// of another identity's session (Mosquitto lets the session be taken over).
	strict bool
}

// targets are the brokers every case runs against.
// restarts is true for a target whose sessions survive a restart (its
// target.restart is set).
var targets = []struct {
	name     string
	start    func(t *testing.T) *target
	restarts bool
}{
	{"embedded", func(t *testing.T) *target { return startEmbedded(t, false) }, false},
	{"embedded-pebble", func(t *testing.T) *target { return startEmbedded(t, true) }, true},
	{"mosquitto", startMosquitto, false},
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func startEmbedded(t *testing.T, persistent bool) *target {
	t.Helper()
	pki := brokertest.NewPKI(t, "hangar-test-ca")
	cfg := broker.Config{Addr: "127.0.0.1:0", TLS: pki.ServerTLS(), Logger: testLogger(t)}
	if persistent {
		cfg.DataDir = filepath.Join(t.TempDir(), "sessions")
	}
	b, err := broker.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	tg := &target{pki: pki, addr: b.Addr(), strict: true}
	if persistent {
		tg.restart = func(t *testing.T) {
			t.Helper()
			if err := b.Close(); err != nil {
				t.Fatalf("close broker: %v", err)
			}
			cfg.Addr = tg.addr
			b, err = broker.Start(context.Background(), cfg)
			if err != nil {
				t.Fatalf("restart broker: %v", err)
			}
			t.Cleanup(func() { _ = b.Close() })
		}
	}
	return tg
}

func startMosquitto(t *testing.T) *target {
	t.Helper()
	pki := brokertest.NewPKI(t, "hangar-test-ca")
	dir := t.TempDir()
	params := mosquitto.Params{
		Port:           brokertest.FreePort(t),
		Bind:           "127.0.0.1",
		CAFile:         pki.CAFile,
		CertFile:       pki.CertFile,
		KeyFile:        pki.KeyFile,
		PersistenceDir: filepath.Join(dir, "data"),
	}
	if os.Geteuid() == 0 {
		params.User = "root" // the key files are root's (see the package comment of mosquitto)
	}
	conf, err := mosquitto.WriteConfig(dir, params)
	if err != nil {
		t.Fatalf("write mosquitto config: %v", err)
	}
	start := func(t *testing.T) *mosquitto.Process {
		t.Helper()
		p, err := mosquitto.Start(context.Background(), conf)
		if errors.Is(err, mosquitto.ErrNotInstalled) {
			t.Fatalf("these tests need a real Mosquitto: apt-get install mosquitto (%v)", err)
		}
		if err != nil {
			t.Fatalf("start mosquitto: %v", err)
		}
		t.Cleanup(func() {
			_ = p.Stop()
			if t.Failed() {
				t.Logf("mosquitto output:\n%s", p.Output())
			}
		})
		return p
	}
	p := start(t)
	return &target{
		pki:  pki,
		addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(params.Port)),
		restart: func(t *testing.T) {
			t.Helper()
			if err := p.Stop(); err != nil {
				t.Fatalf("stop mosquitto: %v", err)
			}
			p = start(t)
		},
	}
}

// dial connects a client with a certificate for cn.
func (tg *target) dial(t *testing.T, cn string, o brokertest.ClientOptions) *brokertest.Client {
	t.Helper()
	if o.ID == "" {
		o.ID = cn + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	return brokertest.MustDial(t, tg.addr, tg.pki.ClientTLS(t, tg.pki, cn), o)
}

func runsOf(pool string) string       { return "hangar/pools/" + pool + "/runs" }
func commandsOf(pool string) string   { return "hangar/pools/" + pool + "/commands" }
func eventsOf(pool string) string     { return "hangar/pools/" + pool + "/events" }
func heartbeatsOf(pool string) string { return "hangar/pools/" + pool + "/heartbeats" }

const refused = 0x80

// wantRC subscribes c to filter and checks the return code.
func wantRC(t *testing.T, c *brokertest.Client, filter string, want byte) {
	t.Helper()
	if got := c.Subscribe(t, filter); got != want {
		t.Fatalf("subscribe %s: return code %#x, want %#x", filter, got, want)
	}
}

// wantRefused subscribes c to filter, which c may not read: a strict broker
// refuses it (0x80), Mosquitto grants it and filters at delivery.
func (tg *target) wantRefused(t *testing.T, c *brokertest.Client, filter string) {
	t.Helper()
	rc := c.Subscribe(t, filter)
	if tg.strict && rc != refused {
		t.Fatalf("subscribe %s: return code %#x, want %#x", filter, rc, refused)
	}
	if !tg.strict && rc != refused && rc > 2 {
		t.Fatalf("subscribe %s: return code %#x", filter, rc)
	}
}

// drain returns the messages c received within d.
func drain(c *brokertest.Client, d time.Duration) []brokertest.Message {
	var out []brokertest.Message
	timeout := time.After(d)
	for {
		select {
		case m := <-c.Messages:
			out = append(out, m)
		case <-timeout:
			return out
		}
	}
}

// noneOn fails t if one of msgs is on topic.
func noneOn(t *testing.T, who string, msgs []brokertest.Message, topic string) {
	t.Helper()
	for _, m := range msgs {
		if m.Topic == topic {
			t.Errorf("%s received %q on %s", who, m.Payload, m.Topic)
		}
	}
}

var cases = []struct {
	name string
	run  func(t *testing.T, tg *target)
}{
	{"runs reach only their pool", func(t *testing.T, tg *target) {
		ctl := tg.dial(t, cp, brokertest.ClientOptions{})
		a := tg.dial(t, "pool-a", brokertest.ClientOptions{})
		b := tg.dial(t, "pool-b", brokertest.ClientOptions{})
		snoop := tg.dial(t, "pool-b", brokertest.ClientOptions{})
		wantRC(t, a, runsOf("pool-a"), 1)
		wantRC(t, a, commandsOf("pool-a"), 1)
		wantRC(t, b, runsOf("pool-b"), 1)
		for _, f := range []string{runsOf("pool-a"), commandsOf("pool-a"), "hangar/pools/+/runs", "hangar/#", "#", eventsOf("pool-b")} {
			tg.wantRefused(t, snoop, f)
		}

		ctl.Publish(t, runsOf("pool-a"), "run-a")
		ctl.Publish(t, commandsOf("pool-a"), "cancel-a")
		ctl.Publish(t, runsOf("pool-b"), "run-b")
		a.Expect(t, runsOf("pool-a"), "run-a", wait)
		a.Expect(t, commandsOf("pool-a"), "cancel-a", wait)
		b.Expect(t, runsOf("pool-b"), "run-b", wait) // fails if run-a came first
		a.ExpectNone(t, quietly)
		b.ExpectNone(t, 0)
		got := drain(snoop, 0)
		noneOn(t, "pool-b", got, runsOf("pool-a"))
		noneOn(t, "pool-b", got, commandsOf("pool-a"))
		if tg.strict && len(got) > 0 {
			t.Errorf("refused subscriptions delivered %v", got)
		}
	}},
	{"shared subscriptions", func(t *testing.T, tg *target) {
		ctl := tg.dial(t, cp, brokertest.ClientOptions{})
		a1 := tg.dial(t, "pool-a", brokertest.ClientOptions{ID: "pool-a-gw1"})
		a2 := tg.dial(t, "pool-a", brokertest.ClientOptions{ID: "pool-a-gw2"})
		b := tg.dial(t, "pool-b", brokertest.ClientOptions{})
		shared := "$share/gateways/" + runsOf("pool-a")
		wantRC(t, a1, shared, 1)
		wantRC(t, a2, shared, 1)
		if tg.strict {
			tg.wantRefused(t, b, shared)
		} else {
			// Mosquitto grants it, and would then give pool-b its turn of the
			// group's messages and drop them at the ACL: pool-b could black-hole
			// some of pool-a's runs. Another group shows that it reads none.
			tg.wantRefused(t, b, "$share/snoop/"+runsOf("pool-a"))
		}
		wantRC(t, b, "$share/gateways/"+runsOf("pool-b"), 1)
		for i := range 4 {
			ctl.Publish(t, runsOf("pool-a"), fmt.Sprint("run-", i))
		}
		got := map[string]int{}
		deadline := time.After(wait)
		for len(got) < 4 {
			select {
			case m := <-a1.Messages:
				got[m.Payload]++
			case m := <-a2.Messages:
				got[m.Payload]++
			case <-deadline:
				t.Fatalf("received %v, want run-0..run-3", got)
			}
		}
		a1.ExpectNone(t, quietly)
		a2.ExpectNone(t, 0)
		b.ExpectNone(t, 0)
		for p, n := range got {
			if n != 1 {
				t.Errorf("%s received %d times", p, n)
			}
		}
	}},
	{"events reach the control plane only from their pool", func(t *testing.T, tg *target) {
		ctl := tg.dial(t, cp, brokertest.ClientOptions{})
		wantRC(t, ctl, "hangar/pools/+/events", 1)
		wantRC(t, ctl, "hangar/pools/+/runs", 1)
		a := tg.dial(t, "pool-a", brokertest.ClientOptions{})
		// Refused publications are acknowledged and dropped; a stays connected.
		a.Publish(t, eventsOf("pool-b"), "forged")
		a.Publish(t, runsOf("pool-a"), "self-run")
		a.Publish(t, "elsewhere", "outside")
		a.Publish(t, eventsOf("pool-a"), "event-a")
		ctl.Expect(t, eventsOf("pool-a"), "event-a", wait)
		ctl.ExpectNone(t, quietly)
		if !a.IsConnectionOpen() {
			t.Fatal("pool-a was disconnected for a refused publication")
		}
	}},
	{"identity is the certificate CN, not the username", func(t *testing.T, tg *target) {
		ctl := tg.dial(t, cp, brokertest.ClientOptions{})
		wantRC(t, ctl, "hangar/#", 1)
		a := tg.dial(t, "pool-a", brokertest.ClientOptions{Username: cp})
		tg.wantRefused(t, a, runsOf("pool-b"))
		tg.wantRefused(t, a, "hangar/#")
		a.Publish(t, runsOf("pool-b"), "forged-run")
		a.Publish(t, heartbeatsOf("pool-a"), "alive")
		ctl.Expect(t, heartbeatsOf("pool-a"), "alive", wait)
		ctl.ExpectNone(t, quietly)
		ctl.Publish(t, runsOf("pool-b"), "run-b")
		noneOn(t, "pool-a", drain(a, quietly), runsOf("pool-b"))
	}},
	{"certificates of another CA and no certificate are refused", func(t *testing.T, tg *target) {
		other := brokertest.NewPKI(t, "another-ca")
		accepted := []string{"certificate required", "unknown authority", "unknown certificate authority",
			"bad certificate", "EOF", "connection reset", "broken pipe"}
		for name, cfg := range map[string]*tls.Config{
			"another CA":     tg.pki.ClientTLS(t, other, cp),
			"no certificate": tg.pki.ClientTLS(t, nil, ""),
		} {
			c, err := brokertest.Dial(tg.addr, cfg, brokertest.ClientOptions{ID: "intruder"})
			if err == nil {
				c.Disconnect(0)
				t.Fatalf("%s: connected", name)
			}
			ok := false
			for _, s := range accepted {
				ok = ok || strings.Contains(err.Error(), s)
			}
			if !ok {
				t.Errorf("%s: unexpected error %v", name, err)
			}
			t.Logf("%s: %v", name, err)
		}
	}},
	{"persistent session", func(t *testing.T, tg *target) {
		testPersistentSession(t, tg, false)
	}},
	{"persistent session across a restart", func(t *testing.T, tg *target) {
		if tg.restart == nil {
			t.Skip("sessions of the in-memory broker do not survive a restart (see embedded-pebble)")
		}
		testPersistentSession(t, tg, true)
	}},
	{"another pool cannot take a session over", func(t *testing.T, tg *target) {
		testForeignTakeover(t, tg, false)
	}},
	{"another pool cannot take a restored session over", func(t *testing.T, tg *target) {
		if tg.restart == nil {
			t.Skip("sessions of the in-memory broker do not survive a restart (see embedded-pebble)")
		}
		testForeignTakeover(t, tg, true)
	}},
	{"a packet above the size limit disconnects its sender", func(t *testing.T, tg *target) {
		a := tg.dial(t, "pool-a", brokertest.ClientOptions{})
		wantRC(t, a, runsOf("pool-a"), 1)
		ctl := tg.dial(t, cp, brokertest.ClientOptions{})
		tok := ctl.Client.Publish(runsOf("pool-a"), 1, false, strings.Repeat("x", broker.DefaultMaxPacketBytes+1))
		if !tok.WaitTimeout(wait) {
			t.Fatal("an oversize publish was neither acknowledged nor refused")
		}
		if tok.Error() == nil && ctl.IsConnectionOpen() {
			t.Fatal("an oversize publish was acknowledged and its sender kept")
		}
		a.ExpectNone(t, quietly)
		ctl2 := tg.dial(t, cp, brokertest.ClientOptions{})
		ctl2.Publish(t, runsOf("pool-a"), "small")
		a.Expect(t, runsOf("pool-a"), "small", wait)
	}},
	{"last will on an unclean drop", func(t *testing.T, tg *target) {
		ctl := tg.dial(t, cp, brokertest.ClientOptions{})
		wantRC(t, ctl, "hangar/pools/+/heartbeats", 1)
		a := tg.dial(t, "pool-a", brokertest.ClientOptions{Will: &brokertest.Will{Topic: heartbeatsOf("pool-a"), Payload: "lost"}})
		a.DropConnection()
		ctl.Expect(t, heartbeatsOf("pool-a"), "lost", wait)

		// A clean disconnect sends no will.
		a2 := tg.dial(t, "pool-a", brokertest.ClientOptions{Will: &brokertest.Will{Topic: heartbeatsOf("pool-a"), Payload: "lost-2"}})
		a2.Disconnect(100)
		ctl.ExpectNone(t, quietly)
	}},
	{"last will to another pool's topic is not delivered", func(t *testing.T, tg *target) {
		ctl := tg.dial(t, cp, brokertest.ClientOptions{})
		wantRC(t, ctl, "hangar/#", 1)
		b := tg.dial(t, "pool-b", brokertest.ClientOptions{})
		wantRC(t, b, runsOf("pool-b"), 1)
		c, err := brokertest.Dial(tg.addr, tg.pki.ClientTLS(t, tg.pki, "pool-a"), brokertest.ClientOptions{
			ID: "pool-a-bad-will", Will: &brokertest.Will{Topic: runsOf("pool-b"), Payload: "forged-run"},
		})
		if err == nil {
			c.DropConnection()
			if tg.strict {
				t.Error("connection with a Last Will to another pool's runs was accepted")
			}
		}
		b.ExpectNone(t, quietly)
		ctl.ExpectNone(t, 0)
	}},
}

// testForeignTakeover checks that pool-b cannot take over pool-a's persistent
// session by its client id (ADR 0011) on a strict broker, and reads nothing
// of it on Mosquitto; after a restart (the session restored from the store)
// if restart is set.
func testForeignTakeover(t *testing.T, tg *target, restart bool) {
	t.Helper()
	session := brokertest.ClientOptions{ID: "pool-a-gateway", Persistent: true}
	a := tg.dial(t, "pool-a", session)
	wantRC(t, a, runsOf("pool-a"), 1)
	a.Disconnect(100)
	ctl := tg.dial(t, cp, brokertest.ClientOptions{})
	ctl.Publish(t, runsOf("pool-a"), "queued-run")
	if restart {
		ctl.Disconnect(100)
		tg.restart(t)
		ctl = tg.dial(t, cp, brokertest.ClientOptions{})
	}

	b, err := brokertest.Dial(tg.addr, tg.pki.ClientTLS(t, tg.pki, "pool-b"), session)
	if err != nil {
		t.Logf("refused: %v", err)
	} else {
		noneOn(t, "pool-b", drain(b, quietly), runsOf("pool-a"))
		ctl.Publish(t, runsOf("pool-a"), "run-while-b")
		noneOn(t, "pool-b", drain(b, quietly), runsOf("pool-a"))
		b.Disconnect(100)
		if tg.strict {
			t.Fatal("pool-b connected with the client id of pool-a's session")
		}
		t.Log("Mosquitto let pool-b take over pool-a's session (it read nothing; pool-a's queue is lost)")
		return
	}
	a = tg.dial(t, "pool-a", session)
	a.Expect(t, runsOf("pool-a"), "queued-run", wait)
}

// testPersistentSession checks that a QoS 1 run published while a pool is
// offline is delivered when it reconnects to its session, after a broker
// restart if restart is set.
func testPersistentSession(t *testing.T, tg *target, restart bool) {
	t.Helper()
	session := brokertest.ClientOptions{ID: "pool-a-gateway", Persistent: true}
	a := tg.dial(t, "pool-a", session)
	wantRC(t, a, runsOf("pool-a"), 1)
	a.Disconnect(100)

	ctl := tg.dial(t, cp, brokertest.ClientOptions{})
	ctl.Publish(t, runsOf("pool-a"), "queued-run")
	ctl.Publish(t, commandsOf("pool-a"), "not-subscribed")
	ctl.Disconnect(100)
	if restart {
		tg.restart(t)
	}
	a = tg.dial(t, "pool-a", session)
	a.Expect(t, runsOf("pool-a"), "queued-run", wait)
	a.ExpectNone(t, quietly)
}

func TestBroker(t *testing.T) {
	for _, tt := range targets {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					c.run(t, tt.start(t))
				})
			}
		})
	}
}
