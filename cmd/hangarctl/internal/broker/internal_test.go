package broker

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"strings"
	"testing"
)

func TestACL(t *testing.T) {
	a := acl{controlPlaneCN: DefaultControlPlaneCN}
	cp := DefaultControlPlaneCN
	for _, tc := range []struct {
		id, topic string
		write     bool
		want      bool
	}{
		{cp, "hangar/pools/p1/runs", true, true},
		{cp, "hangar/pools/p1/commands", true, true},
		{cp, "hangar/pools/+/events", false, true},
		{cp, "hangar/#", false, true},
		{cp, "$share/cp/hangar/pools/+/events", false, true},
		{cp, "#", false, false},
		{cp, "+/pools/p1/events", false, false},
		{cp, "other/topic", true, false},
		{cp, "$SYS/broker/clients", false, false},
		{"p1", "hangar/pools/p1/runs", false, true},
		{"p1", "hangar/pools/p1/commands", false, true},
		{"p1", "$share/gw/hangar/pools/p1/runs", false, true},
		{"p1", "$share/gw/hangar/pools/p1/commands", false, true},
		{"p1", "$share/gw/hangar/pools/p2/runs", false, false},
		{"p1", "$share//hangar/pools/p1/runs", false, false},
		{"p1", "$share/g+/hangar/pools/p1/runs", false, false},
		{"p1", "$share/gw", false, false},
		{"p1", "hangar/pools/p1/runs", true, false},
		{"p1", "hangar/pools/p1/events", false, false},
		{"p1", "hangar/pools/p1/events", true, true},
		{"p1", "hangar/pools/p1/heartbeats", true, true},
		{"p1", "$share/gw/hangar/pools/p1/events", true, false},
		{"p1", "hangar/pools/p2/runs", false, false},
		{"p1", "hangar/pools/p2/events", true, false},
		{"p1", "hangar/pools/+/runs", false, false},
		{"p1", "hangar/pools/p1/#", false, false},
		{"p1", "hangar/#", false, false},
		{"p1", "#", false, false},
		{"", "hangar/pools//runs", false, false},
		{"a/b", "hangar/pools/a/b/runs", false, false},
		{"+", "hangar/pools/+/runs", false, false},
		{"#", "hangar/pools/#", false, false},
		{"$p", "hangar/pools/$p/runs", false, false},
	} {
		if got := a.allowed(tc.id, tc.topic, tc.write); got != tc.want {
			t.Errorf("allowed(%q, %q, write=%v) = %v, want %v", tc.id, tc.topic, tc.write, got, tc.want)
		}
	}
}

func TestQuietHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(&quietHandler{inner: slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})})
	log.Warn("", "error", "EOF")
	log.Warn("error processing packet", "error", "bad")
	log.With("k", "v").Warn("client store quota reached")
	log.Info("attached listener")
	out := buf.String()
	if strings.Contains(out, "EOF") || strings.Contains(out, "error processing packet") {
		t.Errorf("per-connection warnings logged at Info level:\n%s", out)
	}
	if !strings.Contains(out, "client store quota reached") || !strings.Contains(out, "k=v") || !strings.Contains(out, "attached listener") {
		t.Errorf("other records lost:\n%s", out)
	}

	buf.Reset()
	log = slog.New(&quietHandler{inner: slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})})
	log.Warn("", "error", "EOF")
	if !strings.Contains(buf.String(), "level=DEBUG msg=\"client connection ended\" error=EOF") {
		t.Errorf("demoted record: %s", buf.String())
	}
}

func TestStartRefusesConfigWithoutClientCerts(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no TLS":             {Addr: "127.0.0.1:0"},
		"client cert option": {Addr: "127.0.0.1:0", TLS: &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven}},
		"no address":         {TLS: &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}},
	} {
		if b, err := Start(context.Background(), cfg); err == nil {
			_ = b.Close()
			t.Errorf("%s: started", name)
		}
	}
}
