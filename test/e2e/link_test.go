package e2e

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/platform/mqtttopic"
	"github.com/hangar-dev/hangar/platform/pooltoken"
	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// TestLink shows the gateway's MQTT link against both brokers (the embedded
// one and a real Mosquitto, configured by hangarctl): a huge publish is
// refused at the broker without memory growing on either side and without
// the gateway's heartbeats stopping; an envelope above the gateway's own limit
// is reported as oversize without being held; another pool cannot take over
// the gateway's session or join its shared subscription; and a pool
// certificate that is expired, or that the broker refuses, or a broker the
// token's CA does not vouch for, stops the gateway with the reason instead of
// retrying for ever.
func TestLink(t *testing.T) {
	for _, kind := range []string{"embedded", "mosquitto"} {
		t.Run(kind, func(t *testing.T) { linkTests(t, kind) })
	}
}

type linkEnv struct {
	cp         *harness.ControlPlane
	broker     string
	brokerProc *harness.Process
	gatewayBin string
	policyAddr string
	tokenA     string
	keyA       string // key file
	tokenB     string
	keyB       string
}

func linkTests(t *testing.T, kind string) {
	e := &linkEnv{cp: harness.NewControlPlane(t, bins.Path(t, "hangarctl")), gatewayBin: bins.Path(t, "gateway")}
	switch kind {
	case "embedded":
		e.broker, e.brokerProc = e.cp.StartEmbeddedBroker(t)
	case "mosquitto":
		e.broker, e.brokerProc = e.cp.StartMosquitto(t)
	}
	var csrA, csrB string
	e.keyA, csrA = harness.OpenSSLKey(t, t.TempDir())
	e.tokenA = e.cp.CreatePool(t, "pool-a", csrA, e.broker)
	e.keyB, csrB = e.cp.Keygen(t, t.TempDir())
	e.tokenB = e.cp.CreatePool(t, "pool-b", csrB, e.broker)
	e.policyAddr = harness.StartPolicy(t, bins.Path(t, "policy"), harness.WriteFile(t, t.TempDir(), "policy.rego", frozenPolicy)).GRPCAddr

	t.Run("huge publish refused, memory flat, heartbeats flow", e.testHugePublish)
	t.Run("envelope above the gateway's limit reported as oversize", e.testGatewayLimit)
	t.Run("another pool cannot take over the session or the group", e.testTakeover)
	t.Run("certificate problems stop the gateway with the reason", e.testCertificates)
}

// memory returns the resident set size and its peak (VmRSS, VmHWM) of a process, in bytes.
func memory(t *testing.T, pid int) (rss, peak int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("memory of process %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return rss, peak
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func (e *linkEnv) testHugePublish(t *testing.T) {
	obs := harness.Observe(t, e.broker, e.cp.Dir, "pool-a")
	gw := harness.StartGateway(t, e.gatewayBin, e.tokenA, harness.KeyEnv(t, e.keyA), e.policyAddr,
		"HANGAR_HEARTBEAT_INTERVAL=300ms", "HANGAR_WORKER_ID=gw-huge")
	ours := func(hb *eventv1.Heartbeat) bool { return hb.GetWorkerId() == "gw-huge" }
	obs.WaitHeartbeat(wait, "a heartbeat of gw-huge", ours)

	_, brokerPeak0 := memory(t, e.brokerProc.Pid())
	_, gwPeak0 := memory(t, gw.Pid())
	c, err := harness.Connect(t, e.broker, harness.ControlPlaneTLS(t, e.cp.Dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	before := len(obs.Heartbeats())
	tok := c.Publish(mqtttopic.Runs("pool-a"), 1, false, bytes.Repeat([]byte{'x'}, 200<<20))
	if !tok.WaitTimeout(2 * time.Minute) {
		t.Fatal("the 200 MiB publish neither completed nor failed within 2 minutes")
	}
	t.Logf("200 MiB publish: err %v, publisher still connected: %v", tok.Error(), c.IsConnectionOpen())
	if tok.Error() == nil && c.IsConnectionOpen() {
		t.Error("the broker acknowledged a 200 MiB publish and kept the connection")
	}
	// Heartbeats went on: three more arrive (the observer's session is
	// another connection; the gateway's was not disturbed).
	deadline := time.Now().Add(wait)
	for n := 0; n < 3; {
		n = 0
		for _, hb := range obs.Heartbeats()[before:] {
			if ours(hb) {
				n++
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d heartbeats of gw-huge after the huge publish within %s, want 3", n, wait)
		}
		time.Sleep(100 * time.Millisecond)
	}
	brokerRSS, brokerPeak := memory(t, e.brokerProc.Pid())
	gwRSS, gwPeak := memory(t, gw.Pid())
	t.Logf("broker (%s): RSS %s, peak %s (peak before the publish %s)", e.brokerProc.Name, mib(brokerRSS), mib(brokerPeak), mib(brokerPeak0))
	t.Logf("gateway: RSS %s, peak %s (peak before the publish %s)", mib(gwRSS), mib(gwPeak), mib(gwPeak0))
	const allowance = 64 << 20 // far below the 200 MiB a buffered publish would add
	if brokerPeak-brokerPeak0 > allowance {
		t.Errorf("broker peak memory grew by %s during a refused 200 MiB publish", mib(brokerPeak-brokerPeak0))
	}
	if gwPeak-gwPeak0 > allowance {
		t.Errorf("gateway peak memory grew by %s during a refused 200 MiB publish", mib(gwPeak-gwPeak0))
	}
	m := scrape(t, "http://"+gw.DebugAddr+"/metrics")
	if v := metricValue(m, "hangar_mqtt_reconnects_total"); v != 0 {
		t.Errorf("the gateway's session was disturbed: hangar_mqtt_reconnects_total = %v", v)
	}
	gw.Stop()
}

func (e *linkEnv) testGatewayLimit(t *testing.T) {
	obs := harness.Observe(t, e.broker, e.cp.Dir, "pool-a")
	gw := harness.StartGateway(t, e.gatewayBin, e.tokenA, harness.KeyEnv(t, e.keyA), e.policyAddr,
		"HANGAR_WORKER_ID=gw-limit", "HANGAR_MAX_ENVELOPE_BYTES=65536")
	defer gw.Stop()
	c, err := harness.Connect(t, e.broker, harness.ControlPlaneTLS(t, e.cp.Dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Under the broker's limit (4 MiB), above the gateway's (64 KiB + overhead).
	payload := make([]byte, 1<<20)
	_, _ = rand.Read(payload)
	harness.Publish(t, c, mqtttopic.Runs("pool-a"), payload)
	sum := sha256.Sum256(payload)
	id := "envelope/" + hex.EncodeToString(sum[:])
	ev := obs.WaitEvent(wait, "oversize rejection "+id, func(ev *eventv1.Event) bool { return ev.GetEventId() == id })
	if ev.GetRejected().GetReason() != eventv1.RejectReason_REJECT_REASON_OVERSIZE || !strings.Contains(ev.GetRejected().GetMessage(), "1048576 bytes") {
		t.Fatalf("event %s: %v", id, ev)
	}
	// The session goes on: a run submitted next is admitted.
	runID := newRunID()
	spec := harness.WriteFile(t, t.TempDir(), "spec.json", harness.Spec("Web", "team:web"))
	if r := e.cp.Run(t, "run", "submit", "--dir", e.cp.Dir, "--pool", "pool-a", "--spec", spec, "--run-id", runID); r.Code != 0 {
		t.Fatalf("run submit: %s", r)
	}
	obs.WaitEvent(wait, "admitted event of "+runID, isKind(runID, "admitted"))
}

func (e *linkEnv) testTakeover(t *testing.T) {
	obs := harness.Observe(t, e.broker, e.cp.Dir, "pool-a")
	shared := "HANGAR_GATEWAY_SHARED_SUBSCRIPTION=true"
	keyEnv := harness.KeyEnv(t, e.keyA)
	gw1 := harness.StartGateway(t, e.gatewayBin, e.tokenA, keyEnv, e.policyAddr, shared, "HANGAR_WORKER_ID=gw-1")
	defer gw1.Stop()
	gw2 := harness.StartGateway(t, e.gatewayBin, e.tokenA, keyEnv, e.policyAddr, shared, "HANGAR_WORKER_ID=gw-2")
	defer gw2.Stop()

	// Pool B tries what it can name: the client ids and the shared group a
	// pool's gateways would use if they were derived from public names, each
	// with a persistent session, subscribed to pool A's runs through the group.
	confB := poolTLS(t, e.tokenB, e.keyB)
	for _, id := range []string{"hangar-gw-pool-a-gw-1", "hangar-gw-pool-a-gw-2", "gw-1", "pool-a"} {
		opts := mqtt.NewClientOptions().AddBroker(e.broker).SetClientID(id).SetTLSConfig(confB).
			SetProtocolVersion(4).SetCleanSession(false).SetAutoReconnect(false)
		c := mqtt.NewClient(opts)
		if tok := c.Connect(); tok.WaitTimeout(20*time.Second) && tok.Error() == nil {
			for _, group := range []string{"hangar-pool-a", "gateways"} {
				c.Subscribe("$share/"+group+"/"+mqtttopic.Runs("pool-a"), 1, nil).WaitTimeout(10 * time.Second)
			}
			t.Cleanup(func() { c.Disconnect(100) })
			t.Logf("pool-b connected with client id %q and subscribed to pool-a's runs in the groups it can name", id)
		} else {
			t.Logf("pool-b refused with client id %q: %v", id, tok.Error())
		}
	}
	// Every run of pool A is taken by one of its gateways.
	spec := harness.WriteFile(t, t.TempDir(), "spec.json", harness.Spec("Web", "team:web"))
	var runs []string
	for range 8 {
		runID := newRunID()
		if r := e.cp.Run(t, "run", "submit", "--dir", e.cp.Dir, "--pool", "pool-a", "--spec", spec, "--run-id", runID); r.Code != 0 {
			t.Fatalf("run submit: %s", r)
		}
		runs = append(runs, runID)
	}
	for _, id := range runs {
		obs.WaitEvent(wait, "admitted event of "+id, isKind(id, "admitted"))
	}
	for _, gw := range []*harness.Gateway{gw1, gw2} {
		if v := metricValue(scrape(t, "http://"+gw.DebugAddr+"/metrics"), "hangar_mqtt_reconnects_total"); v != 0 {
			t.Errorf("gateway %s lost its session %v times", gw.DebugAddr, v)
		}
	}
}

func (e *linkEnv) testCertificates(t *testing.T) {
	tok := harness.DecodeToken(t, e.tokenA)
	caCert, caKey := loadCA(t, e.cp.Dir)
	poolPub := publicKeyOf(t, e.keyA)
	otherCA, otherKey := newCA(t, "another CA")

	expired := issueCert(t, caCert, caKey, poolPub, "pool-a", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	foreign := issueCert(t, otherCA, otherKey, poolPub, "pool-a", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	for _, tc := range []struct {
		name string
		edit func(map[string]any)
		want *regexp.Regexp
	}{
		{"expired pool certificate", func(m map[string]any) { m["certificate_pem"] = expired },
			regexp.MustCompile(`HANGAR_TOKEN: .*pool certificate \(CN "pool-a"\) expired at \d{4}-\d\d-\d\d`)},
		{"pool certificate of another CA", func(m map[string]any) { m["certificate_pem"] = foreign },
			regexp.MustCompile(`permanent TLS error: the broker refused this pool's certificate`)},
		{"broker not vouched for by the token's CA", func(m map[string]any) { m["broker_ca_pem"] = string(pemOf(otherCA.Raw)) },
			regexp.MustCompile(`permanent TLS error: the broker's certificate is not signed by the CA in the pool token`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := map[string]any{}
			raw, _ := json.Marshal(tok)
			_ = json.Unmarshal(raw, &m)
			tc.edit(m)
			raw, _ = json.Marshal(m)
			token := base64.StdEncoding.EncodeToString(raw)
			env, _, _, _ := harness.GatewayEnv(t, token, harness.KeyEnv(t, e.keyA), e.policyAddr, "HANGAR_WORKER_ID=gw-cert")
			p := harness.Start(t, "gateway-cert", env, e.gatewayBin)
			if code := p.WaitExit(time.Minute); code == 0 {
				t.Fatalf("the gateway exited 0:\n%s", p.Output())
			}
			if !tc.want.MatchString(p.Output()) {
				t.Fatalf("the gateway's output does not match %s:\n%s", tc.want, p.Output())
			}
		})
	}
}

func loadCA(t *testing.T, dir string) (*x509.Certificate, any) {
	t.Helper()
	cb, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	kb, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	cblock, _ := pem.Decode(cb)
	kblock, _ := pem.Decode(kb)
	if cblock == nil || kblock == nil {
		t.Fatal("CA files are not PEM")
	}
	cert, err := x509.ParseCertificate(cblock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var key any
	if key, err = x509.ParsePKCS8PrivateKey(kblock.Bytes); err != nil {
		if key, err = x509.ParseECPrivateKey(kblock.Bytes); err != nil {
			t.Fatalf("CA key: %v", err)
		}
	}
	return cert, key
}

func publicKeyOf(t *testing.T, keyFile string) any {
	t.Helper()
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatal("pool key is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(crypto.Signer).Public()
}

func newCA(t *testing.T, cn string) (*x509.Certificate, any) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

func issueCert(t *testing.T, ca *x509.Certificate, caKey, pub any, cn string, notBefore, notAfter time.Time) string {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pemOf(der))
}

func pemOf(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// poolTLS is the client TLS configuration of a pool (its token and key file).
func poolTLS(t *testing.T, token, keyFile string) *tls.Config {
	t.Helper()
	tok, err := pooltoken.Parse(token)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pooltoken.ParsePrivateKeyB64(harness.KeyEnv(t, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	conf, err := tok.ClientTLS(key)
	if err != nil {
		t.Fatal(err)
	}
	return conf
}
