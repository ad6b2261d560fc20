package cli

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/broker/brokertest"
	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/cpdir"
)

// lineWriter sends each write to a channel.
type lineWriter chan string

func (w lineWriter) Write(p []byte) (int, error) {
	w <- string(p)
	return len(p), nil
}

func TestBrokerEmbedded(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cp")
	d, err := cpdir.Init(dir, nil)
	if err != nil {
		t.Fatalf("init control-plane directory: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(lineWriter, 10)
	done := make(chan error, 1)
	go func() {
		done <- runBroker(ctx, env{args: []string{"--dir", dir, "--listen", "127.0.0.1:0"}, stdout: out, stderr: io.Discard})
	}()
	var addr string
	select {
	case line := <-out:
		var ok bool
		addr, ok = strings.CutPrefix(strings.TrimSpace(line), "broker listening on mqtts://")
		if !ok {
			t.Fatalf("first line %q", line)
		}
	case err := <-done:
		t.Fatalf("broker ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("broker did not say it listens")
	}

	cfg, err := d.ClientTLS("127.0.0.1")
	if err != nil {
		t.Fatalf("client TLS: %v", err)
	}
	c := brokertest.MustDial(t, addr, cfg, brokertest.ClientOptions{ID: "control-plane"})
	if rc := c.Subscribe(t, "hangar/pools/+/events"); rc != 1 {
		t.Fatalf("control plane subscription: return code %#x", rc)
	}
	c.Publish(t, "hangar/pools/p1/events", "hello")
	c.Expect(t, "hangar/pools/p1/events", "hello", 5*time.Second)
	c.Disconnect(100)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("broker: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("broker did not stop on cancel")
	}
}

func TestBrokerMosquittoConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cp")
	d, err := cpdir.Init(dir, nil)
	if err != nil {
		t.Fatalf("init control-plane directory: %v", err)
	}
	outDir := filepath.Join(t.TempDir(), "mosquitto")
	var stdout bytes.Buffer
	err = runBroker(context.Background(), env{
		args:   []string{"--dir", dir, "--listen", "0.0.0.0:8883", "--mosquitto-config", outDir},
		stdout: &stdout, stderr: io.Discard,
	})
	if err != nil {
		t.Fatalf("broker --mosquitto-config: %v", err)
	}
	conf := filepath.Join(outDir, "mosquitto.conf")
	if !strings.Contains(stdout.String(), "mosquitto -c "+conf) {
		t.Errorf("output does not say how to run mosquitto:\n%s", stdout.String())
	}
	data, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"listener 8883 0.0.0.0\n", "cafile " + d.CAFile() + "\n", "keyfile " + d.BrokerKeyFile() + "\n",
		"persistence_location " + filepath.Join(outDir, "data") + "/\n"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("mosquitto.conf lacks %q:\n%s", want, data)
		}
	}

	err = runBroker(context.Background(), env{
		args:   []string{"--dir", dir, "--listen", "127.0.0.1:0", "--mosquitto-config", outDir},
		stdout: io.Discard, stderr: io.Discard,
	})
	if err == nil || !strings.Contains(err.Error(), "fixed port") {
		t.Errorf("port 0 for Mosquitto: got %v", err)
	}
}
