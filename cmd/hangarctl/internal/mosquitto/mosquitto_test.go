package mosquitto_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/broker/brokertest"
	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/mosquitto"
)

func TestWriteConfig(t *testing.T) {
	dir := t.TempDir()
	conf, err := mosquitto.WriteConfig(dir, mosquitto.Params{
		Port: 8883, Bind: "0.0.0.0", CAFile: "/etc/hangar/ca.crt", CertFile: "/etc/hangar/broker.crt",
		KeyFile: "/etc/hangar/broker.key", PersistenceDir: filepath.Join(dir, "data"),
	})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"listener 8883 0.0.0.0\n", "cafile /etc/hangar/ca.crt\n", "certfile /etc/hangar/broker.crt\n",
		"keyfile /etc/hangar/broker.key\n", "require_certificate true\n", "use_identity_as_username true\n",
		"tls_version tlsv1.2\n", "allow_anonymous false\n", "acl_file " + filepath.Join(dir, "acl.conf") + "\n",
		"persistence true\n", "persistence_location " + filepath.Join(dir, "data") + "/\n",
		"max_packet_size 4194304\n",
	} {
		if !strings.Contains(string(data), want) {
			t.Errorf("mosquitto.conf lacks %q:\n%s", want, data)
		}
	}
	if strings.Contains(string(data), "\nuser ") {
		t.Errorf("user option written without Params.User:\n%s", data)
	}
	acl, err := os.ReadFile(filepath.Join(dir, "acl.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"pattern read hangar/pools/%u/runs\n", "pattern read hangar/pools/%u/commands\n",
		"pattern write hangar/pools/%u/events\n", "pattern write hangar/pools/%u/heartbeats\n",
		"user hangar-control-plane\ntopic readwrite hangar/#\n",
	} {
		if !strings.Contains(string(acl), want) {
			t.Errorf("acl.conf lacks %q:\n%s", want, acl)
		}
	}

	for name, p := range map[string]mosquitto.Params{
		"no port":    {CAFile: "a", CertFile: "b", KeyFile: "c"},
		"no key":     {Port: 1, CAFile: "a", CertFile: "b"},
		"bad CN":     {Port: 1, CAFile: "a", CertFile: "b", KeyFile: "c", ControlPlaneCN: "x\ntopic readwrite #"},
		"port range": {Port: 70000, CAFile: "a", CertFile: "b", KeyFile: "c"},
	} {
		if _, err := mosquitto.WriteConfig(t.TempDir(), p); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// startParams returns parameters for a test broker on a free port.
func startParams(t *testing.T, pki *brokertest.PKI) mosquitto.Params {
	p := mosquitto.Params{
		Port: brokertest.FreePort(t), Bind: "127.0.0.1",
		CAFile: pki.CAFile, CertFile: pki.CertFile, KeyFile: pki.KeyFile,
	}
	if os.Geteuid() == 0 {
		p.User = "root"
	}
	return p
}

func start(t *testing.T, conf string) *mosquitto.Process {
	t.Helper()
	p, err := mosquitto.Start(context.Background(), conf)
	if errors.Is(err, mosquitto.ErrNotInstalled) {
		t.Fatalf("these tests need a real Mosquitto: apt-get install mosquitto (%v)", err)
	}
	if err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	return p
}

func TestStartStop(t *testing.T) {
	pki := brokertest.NewPKI(t, "test-ca")
	conf, err := mosquitto.WriteConfig(t.TempDir(), startParams(t, pki))
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, conf)

	ctl := brokertest.MustDial(t, p.Addr(), pki.ClientTLS(t, pki, mosquitto.DefaultControlPlaneCN), brokertest.ClientOptions{ID: "cp"})
	if rc := ctl.Subscribe(t, "hangar/pools/+/heartbeats"); rc != 1 {
		t.Fatalf("subscribe: return code %#x", rc)
	}
	pool := brokertest.MustDial(t, p.Addr(), pki.ClientTLS(t, pki, "pool-1"), brokertest.ClientOptions{ID: "gw"})
	pool.Publish(t, "hangar/pools/pool-2/heartbeats", "forged")
	pool.Publish(t, "hangar/pools/pool-1/heartbeats", "beat")
	ctl.Expect(t, "hangar/pools/pool-1/heartbeats", "beat", 5*time.Second)
	ctl.ExpectNone(t, 200*time.Millisecond)
	if !strings.Contains(p.Output(), "u'pool-1'") {
		t.Errorf("mosquitto did not take the CN as username:\n%s", p.Output())
	}

	if err := p.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if _, err := brokertest.Dial(p.Addr(), pki.ClientTLS(t, pki, "pool-1"), brokertest.ClientOptions{ID: "late"}); err == nil {
		t.Fatal("connected after Stop")
	}
}

// TestStartFailure checks that a broker that cannot read its key (here: a
// missing key) is reported with mosquitto's output rather than hanging.
func TestStartFailure(t *testing.T) {
	pki := brokertest.NewPKI(t, "test-ca")
	params := startParams(t, pki)
	params.KeyFile = filepath.Join(t.TempDir(), "missing.key")
	conf, err := mosquitto.WriteConfig(t.TempDir(), params)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	p, err := mosquitto.Start(ctx, conf)
	if errors.Is(err, mosquitto.ErrNotInstalled) {
		t.Fatalf("these tests need a real Mosquitto: apt-get install mosquitto (%v)", err)
	}
	if err == nil {
		_ = p.Stop()
		t.Fatal("started with a missing key")
	}
	if !strings.Contains(err.Error(), "missing.key") {
		t.Errorf("error does not show mosquitto's complaint: %v", err)
	}
}
