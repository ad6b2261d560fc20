package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/platform/ids"
)

func resultEvent(t *testing.T, gateway, id string, st eventv1.CommandStatus, why eventv1.CommandRefusal) []byte {
	t.Helper()
	b, err := proto.Marshal(&eventv1.Event{WorkerId: gateway, Kind: &eventv1.Event_CommandResult{CommandResult: &eventv1.CommandResult{
		CommandId: id, Status: st, Refusal: why, Message: "m"}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAnswerWaiter(t *testing.T) {
	applied, refused := eventv1.CommandStatus_COMMAND_STATUS_APPLIED, eventv1.CommandStatus_COMMAND_STATUS_REFUSED
	unknown := eventv1.CommandRefusal_COMMAND_REFUSAL_UNKNOWN_RUN
	for _, tc := range []struct {
		name        string
		events      func(t *testing.T) [][]byte
		wantStatus  eventv1.CommandStatus
		wantGateway string
		wantErr     bool
	}{
		{"applied", func(t *testing.T) [][]byte {
			return [][]byte{resultEvent(t, "gw1", "cmd-1", applied, 0)}
		}, applied, "gw1", false},
		{"final refusal", func(t *testing.T) [][]byte {
			return [][]byte{resultEvent(t, "gw1", "cmd-1", refused, eventv1.CommandRefusal_COMMAND_REFUSAL_ALREADY_FINISHED)}
		}, refused, "gw1", false},
		{"unknown on one gateway, applied on the other", func(t *testing.T) [][]byte {
			return [][]byte{resultEvent(t, "gw1", "cmd-1", refused, unknown), resultEvent(t, "gw2", "cmd-1", applied, 0)}
		}, applied, "gw2", false},
		{"only unknown", func(t *testing.T) [][]byte {
			return [][]byte{resultEvent(t, "gw1", "cmd-1", refused, unknown)}
		}, refused, "gw1", false},
		{"other commands and garbage are ignored", func(t *testing.T) [][]byte {
			return [][]byte{[]byte("garbage"), resultEvent(t, "gw1", "cmd-2", applied, 0)}
		}, 0, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newAnswerWaiter("cmd-1")
			for _, e := range tc.events(t) {
				w.take(e)
			}
			ctx, cancel := context.WithTimeout(context.Background(), unknownSettle+2*time.Second)
			defer cancel()
			res, gw, err := w.wait(ctx)
			if (err != nil) != tc.wantErr || res.GetStatus() != tc.wantStatus || gw != tc.wantGateway {
				t.Fatalf("wait = %v, %q, %v", res, gw, err)
			}
		})
	}
}

func TestCommandIDsAreNotRunIDs(t *testing.T) {
	id := newCommandID()
	if !strings.HasPrefix(id, "cmd-") || !ids.ValidCommandID(id) {
		t.Fatalf("command id %q", id)
	}
}
