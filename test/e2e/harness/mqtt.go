package harness

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
)

// TLSFromFiles is a client TLS configuration: certificate and key files (both
// empty: no client certificate) and the CA that signs the broker's certificate.
func TLSFromFiles(t testing.TB, certFile, keyFile, caFile string) *tls.Config {
	t.Helper()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	var certPEM, keyPEM []byte
	if certFile != "" {
		if certPEM, err = os.ReadFile(certFile); err != nil {
			t.Fatal(err)
		}
		if keyPEM, err = os.ReadFile(keyFile); err != nil {
			t.Fatal(err)
		}
	}
	return TLSFromPEM(t, certPEM, keyPEM, caPEM)
}

// TLSFromPEM is TLSFromFiles with the PEM contents.
func TLSFromPEM(t testing.TB, certPEM, keyPEM, caPEM []byte) *tls.Config {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("harness: no CA certificate in PEM")
	}
	conf := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if certPEM != nil {
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatalf("harness: client key pair: %v", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf
}

// ControlPlaneTLS is the control plane's client TLS configuration from a
// control-plane directory (hangarctl ca init).
func ControlPlaneTLS(t testing.TB, cpDir string) *tls.Config {
	return TLSFromFiles(t, filepath.Join(cpDir, "control-plane.crt"), filepath.Join(cpDir, "control-plane.key"), filepath.Join(cpDir, "ca.crt"))
}

// Connect opens an MQTT 3.1.1 session (clean) to broker (mqtts://host:port)
// with conf, without retrying. The client is disconnected in t.Cleanup.
func Connect(t testing.TB, broker string, conf *tls.Config, onMessage mqtt.MessageHandler) (mqtt.Client, error) {
	t.Helper()
	var id [6]byte
	_, _ = rand.Read(id[:])
	opts := mqtt.NewClientOptions().
		AddBroker(broker).
		SetClientID("e2e-" + hex.EncodeToString(id[:])).
		SetTLSConfig(conf).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(20 * time.Second).
		SetOrderMatters(false)
	if onMessage != nil {
		opts.SetDefaultPublishHandler(onMessage)
	}
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(30 * time.Second) {
		return nil, fmt.Errorf("connect to %s: no CONNACK within 30s", broker)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

// Subscribe subscribes c to topic at QoS 1 and returns the SUBACK return code.
func Subscribe(t testing.TB, c mqtt.Client, topic string, h mqtt.MessageHandler) byte {
	t.Helper()
	tok := c.Subscribe(topic, 1, h)
	if !tok.WaitTimeout(30 * time.Second) {
		t.Fatalf("subscribe %s: no SUBACK within 30s", topic)
	}
	st, ok := tok.(*mqtt.SubscribeToken)
	if !ok {
		t.Fatalf("subscribe %s: unexpected token %T", topic, tok)
	}
	// paho reports a 0x80 return code as an error too; the code is what counts.
	code, ok := st.Result()[topic]
	if !ok {
		t.Fatalf("subscribe %s: no return code (err %v)", topic, tok.Error())
	}
	return code
}

// Publish publishes payload at QoS 1 and waits for the PUBACK.
func Publish(t testing.TB, c mqtt.Client, topic string, payload []byte) {
	t.Helper()
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(30 * time.Second) {
		t.Fatalf("publish %s: no PUBACK within 30s", topic)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

// DescribeEvent is a one-line summary of an event.
func DescribeEvent(ev *eventv1.Event) string {
	kind := "?"
	switch k := ev.GetKind().(type) {
	case *eventv1.Event_Received:
		kind = "received"
	case *eventv1.Event_Denied:
		kind = fmt.Sprintf("denied %q", k.Denied.GetMessages())
	case *eventv1.Event_Admitted:
		kind = "admitted"
	case *eventv1.Event_Started:
		kind = "started on " + k.Started.GetExecutorId()
	case *eventv1.Event_Phase:
		kind = "phase " + k.Phase.GetPhase()
	case *eventv1.Event_Finished:
		kind = fmt.Sprintf("finished %s exit %d %q", k.Finished.GetOutcome(), k.Finished.GetExitCode(), k.Finished.GetReason())
	case *eventv1.Event_Rejected:
		kind = fmt.Sprintf("rejected %s %q", k.Rejected.GetReason(), k.Rejected.GetMessage())
	case *eventv1.Event_Unconfirmed:
		kind = "unconfirmed " + k.Unconfirmed.GetStateKey()
	}
	return fmt.Sprintf("%s run=%q seq=%d %s", ev.GetEventId(), ev.GetRunId(), ev.GetSequence(), kind)
}

func sortBySequence(evs []*eventv1.Event) {
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].GetSequence() < evs[j].GetSequence() })
}
