package cli

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/broker/brokertest"
	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/cpdir"
	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/platform/runenvelope"
	"google.golang.org/protobuf/proto"
)

func TestRunConfirmUsage(t *testing.T) {
	for _, args := range [][]string{
		{"run", "confirm"},
		{"run", "confirm", "--dir", "d", "--pool", "p"},
		{"run", "confirm", "--dir", "d", "r1"},
		{"run", "confirm", "--pool", "p", "r1"},
		{"run", "confirm", "--dir", "d", "--pool", "p", "r1", "r2"},
		{"run", "confirm", "--bogus", "r1"},
	} {
		code, _, stderr := poolCLI(t, args...)
		if code != 2 || !strings.Contains(stderr, "hangarctl run confirm") {
			t.Errorf("%v: exit %d, stderr %q; want a usage error", args, code, stderr)
		}
	}
	cmd, dir, pool, _, err := parseConfirm(env{args: []string{"--dir", "d", "--pool", "p", "r1"}, stdout: io.Discard, stderr: io.Discard})
	if err != nil || dir != "d" || pool != "p" || cmd.GetConfirm().GetRunId() != "r1" {
		t.Fatalf("parseConfirm = %v, %q, %q, %v", cmd, dir, pool, err)
	}
	if _, _, _, _, err := parseConfirm(env{args: []string{"-h"}, stdout: io.Discard, stderr: io.Discard}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	_, out, _ := poolCLI(t, "help")
	if !strings.Contains(out, "run confirm") {
		t.Errorf("help does not list run confirm:\n%s", out)
	}
}

// TestRunConfirmSendsASignedCommand: the command reaches the pool's command
// topic through the broker, signed with the run-signing key, and hangarctl
// waits for the answer: a refusal exits 1 with the reason; no answer exits 1
// after --timeout.
func TestRunConfirmSendsASignedCommand(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "cp")
	mustPoolCLI(t, "ca", "init", "--dir", dir)
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
		addr, _ = strings.CutPrefix(strings.TrimSpace(line), "broker listening on mqtts://")
	case err := <-done:
		t.Fatalf("broker ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("broker did not say it listens")
	}
	key, csr := filepath.Join(tmp, "p.key"), filepath.Join(tmp, "p.csr")
	mustPoolCLI(t, "keygen", "--key", key, "--csr", csr, "--cn", "p1")
	mustPoolCLI(t, "pool", "create", "--dir", dir, "--name", "p1", "--csr", csr, "--broker", "mqtts://"+addr)

	d, err := cpdir.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := d.ClientTLS("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	c := brokertest.MustDial(t, addr, cfg, brokertest.ClientOptions{ID: "watcher"})
	if rc := c.Subscribe(t, "hangar/pools/+/commands"); rc > 2 {
		t.Fatalf("subscribe: return code %#x", rc)
	}
	defer c.Disconnect(100)

	type result struct {
		code        int
		out, errOut string
	}
	cli := make(chan result, 1)
	go func() {
		code, out, errOut := poolCLI(t, "run", "confirm", "--dir", dir, "--pool", "p1", "--timeout", "20s", "run-42")
		cli <- result{code, out, errOut}
	}()
	signing, err := d.SigningKey()
	if err != nil {
		t.Fatal(err)
	}
	var cmd *eventv1.Command
	select {
	case m := <-c.Messages:
		if !strings.HasSuffix(m.Topic, "/commands") {
			t.Fatalf("message on %s", m.Topic)
		}
		o := &runenvelope.Opener{PoolID: strings.Split(m.Topic, "/")[2], VerifyKey: signing.Public().(ed25519.PublicKey)}
		cmd, err = o.VerifyCommand([]byte(m.Payload))
		if err != nil {
			t.Fatalf("VerifyCommand: %v", err)
		}
		if cmd.GetConfirm().GetRunId() != "run-42" || !strings.HasPrefix(cmd.GetCommandId(), "cmd-") {
			t.Fatalf("command = %v", cmd)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no command on the pool's command topic")
	}
	// The test answers as a gateway would: refused.
	ans, _ := proto.Marshal(&eventv1.Event{WorkerId: "gw-test", Kind: &eventv1.Event_CommandResult{CommandResult: &eventv1.CommandResult{
		CommandId: cmd.GetCommandId(), Status: eventv1.CommandStatus_COMMAND_STATUS_REFUSED,
		Refusal: eventv1.CommandRefusal_COMMAND_REFUSAL_NOT_WAITING_FOR_CONFIRMATION, Message: "run run-42 is leased; it has not stopped for confirmation",
	}}})
	c.Publish(t, "hangar/pools/"+cmd.GetPoolId()+"/events", string(ans))
	r := <-cli
	if r.code != 1 || !strings.Contains(r.out, "sent to pool p1") ||
		!strings.Contains(r.errOut, "refused by gateway gw-test (not waiting for confirmation): run run-42 is leased") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.out, r.errOut)
	}

	// Nobody answers: a clear message after the timeout, exit 1.
	code, _, errOut := poolCLI(t, "run", "confirm", "--dir", dir, "--pool", "p1", "--timeout", "1s", "run-42")
	if code != 1 || !strings.Contains(errOut, "no gateway of pool p1 answered command cmd-") {
		t.Fatalf("exit %d, stderr: %s", code, errOut)
	}
}
