package runenvelope

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"google.golang.org/protobuf/proto"
)

func testCommand() *eventv1.Command {
	return &eventv1.Command{
		CommandId:       "cmd-1",
		PoolId:          "pool-a",
		IssuedAtUnixMs:  testNow.UnixMilli(),
		ExpiresAtUnixMs: testNow.Add(time.Minute).UnixMilli(),
		Kind:            &eventv1.Command_Cancel{Cancel: &eventv1.CancelRun{RunId: "run-1"}},
	}
}

func TestCommands(t *testing.T) {
	f := fixtures()
	seal := func(t *testing.T, key ed25519.PrivateKey, mod func(c *eventv1.Command)) []byte {
		c := testCommand()
		if mod != nil {
			mod(c)
		}
		b, err := SealCommand(key, c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// raw signs arbitrary command bytes under a domain.
	raw := func(t *testing.T, domain string, cmd []byte) []byte {
		return marshal(t, &eventv1.SignedCommand{Command: cmd, Signature: ed25519.Sign(f.signKey, signed(domain, cmd))})
	}
	tests := []struct {
		name    string
		payload func(t *testing.T) []byte
		reason  eventv1.RejectReason
		id      string
	}{
		{name: "ok", payload: func(t *testing.T) []byte { return seal(t, f.signKey, nil) }},
		{name: "drain", payload: func(t *testing.T) []byte {
			return seal(t, f.signKey, func(c *eventv1.Command) { c.Kind = &eventv1.Command_Drain{Drain: &eventv1.DrainWorker{WorkerId: "w"}} })
		}},
		{name: "bad signature", payload: func(t *testing.T) []byte { return seal(t, f.otherSignKey, nil) },
			reason: eventv1.RejectReason_REJECT_REASON_BAD_SIGNATURE, id: "cmd-1"},
		{name: "run-envelope domain", payload: func(t *testing.T) []byte { return raw(t, runDomain, marshal(t, testCommand())) },
			reason: eventv1.RejectReason_REJECT_REASON_BAD_SIGNATURE, id: "cmd-1"},
		{name: "another pool", payload: func(t *testing.T) []byte {
			return seal(t, f.signKey, func(c *eventv1.Command) { c.PoolId = "pool-b" })
		}, reason: eventv1.RejectReason_REJECT_REASON_WRONG_POOL, id: "cmd-1"},
		{name: "expired", payload: func(t *testing.T) []byte {
			return seal(t, f.signKey, func(c *eventv1.Command) {
				c.IssuedAtUnixMs = testNow.Add(-time.Hour).UnixMilli()
				c.ExpiresAtUnixMs = testNow.Add(-time.Minute).UnixMilli()
			})
		}, reason: eventv1.RejectReason_REJECT_REASON_EXPIRED, id: "cmd-1"},
		{name: "issued in the future", payload: func(t *testing.T) []byte {
			return seal(t, f.signKey, func(c *eventv1.Command) {
				c.IssuedAtUnixMs = testNow.Add(time.Hour).UnixMilli()
				c.ExpiresAtUnixMs = testNow.Add(2 * time.Hour).UnixMilli()
			})
		}, reason: eventv1.RejectReason_REJECT_REASON_EXPIRED, id: "cmd-1"},
		{name: "unknown field in command", payload: func(t *testing.T) []byte {
			return raw(t, commandDomain, append(marshal(t, testCommand()), unknownField()...))
		}, reason: eventv1.RejectReason_REJECT_REASON_MALFORMED, id: "cmd-1"},
		{name: "unknown field in signed command", payload: func(t *testing.T) []byte {
			return append(seal(t, f.signKey, nil), unknownField()...)
		}, reason: eventv1.RejectReason_REJECT_REASON_MALFORMED},
		{name: "no kind", payload: func(t *testing.T) []byte {
			c := testCommand()
			c.Kind = nil
			return raw(t, commandDomain, marshal(t, c))
		}, reason: eventv1.RejectReason_REJECT_REASON_MALFORMED, id: "cmd-1"},
		{name: "no id", payload: func(t *testing.T) []byte {
			c := testCommand()
			c.CommandId = ""
			return raw(t, commandDomain, marshal(t, c))
		}, reason: eventv1.RejectReason_REJECT_REASON_MALFORMED},
		{name: "garbage", payload: func(t *testing.T) []byte { return []byte("\xff\xffgarbage") },
			reason: eventv1.RejectReason_REJECT_REASON_MALFORMED},
		{name: "oversize", payload: func(t *testing.T) []byte { return make([]byte, DefaultMaxSize+1) },
			reason: eventv1.RejectReason_REJECT_REASON_OVERSIZE},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, err := testOpener(f).VerifyCommand(tt.payload(t))
			if tt.reason == eventv1.RejectReason_REJECT_REASON_UNSPECIFIED {
				if err != nil {
					t.Fatal(err)
				}
				if cmd.GetCommandId() != "cmd-1" || cmd.GetKind() == nil {
					t.Fatalf("command = %v", cmd)
				}
				return
			}
			var re *RejectError
			if !errors.As(err, &re) || re.Reason != tt.reason {
				t.Fatalf("got %v, want %v", err, tt.reason)
			}
			if re.CommandID != tt.id || re.RunID != "" {
				t.Errorf("command id %q (run id %q), want %q", re.CommandID, re.RunID, tt.id)
			}
			if !strings.HasPrefix(err.Error(), "command rejected (") {
				t.Errorf("message %q", err)
			}
		})
	}
}

func TestSealCommandParams(t *testing.T) {
	f := fixtures()
	tests := []struct {
		name string
		key  ed25519.PrivateKey
		mod  func(c *eventv1.Command) *eventv1.Command
	}{
		{"no key", nil, func(c *eventv1.Command) *eventv1.Command { return c }},
		{"nil command", f.signKey, func(c *eventv1.Command) *eventv1.Command { return nil }},
		{"no id", f.signKey, func(c *eventv1.Command) *eventv1.Command { c.CommandId = ""; return c }},
		{"no pool", f.signKey, func(c *eventv1.Command) *eventv1.Command { c.PoolId = ""; return c }},
		{"no expiry", f.signKey, func(c *eventv1.Command) *eventv1.Command { c.ExpiresAtUnixMs = 0; return c }},
		{"no kind", f.signKey, func(c *eventv1.Command) *eventv1.Command { c.Kind = nil; return c }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := SealCommand(tt.key, tt.mod(testCommand())); !errors.Is(err, ErrInvalidParams) {
				t.Fatalf("got %v", err)
			}
		})
	}
	// The original command is not modified by sealing.
	c := testCommand()
	if _, err := SealCommand(f.signKey, c); err != nil || !proto.Equal(c, testCommand()) {
		t.Fatalf("SealCommand: %v", err)
	}
}
