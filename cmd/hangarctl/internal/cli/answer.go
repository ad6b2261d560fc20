package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/controlplane"
	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/cpdir"
	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/platform/mqtttopic"
	"github.com/hangar-dev/hangar/platform/runenvelope"
)

// defaultAnswerTimeout is how long a command waits for the pool's answer.
const defaultAnswerTimeout = 30 * time.Second

// unknownSettle is how long a refusal for a target the answering gateway does
// not know (another gateway of the pool may hold it) waits for an APPLIED from
// another gateway before it is taken as the answer.
const unknownSettle = 3 * time.Second

// commandTTL is how long a command stays valid for the pool.
const commandTTL = 15 * time.Minute

func answerTimeoutFlag(fs *flag.FlagSet) *time.Duration {
	return fs.Duration("timeout", defaultAnswerTimeout, "how long to wait for the pool's answer")
}

// sendCommand signs and publishes a command to a pool, then waits for the
// pool's answer (hangar.event.v1.CommandResult): nil when a gateway applied
// it, an error naming the refusal and its reason otherwise, or when no answer
// came within wait.
func sendCommand(ctx context.Context, dir, pool string, cmd *eventv1.Command, wait time.Duration, out io.Writer) error {
	d, err := cpdir.Open(dir)
	if err != nil {
		return err
	}
	p, err := d.Pool(pool)
	if err != nil {
		return err
	}
	key, err := d.SigningKey()
	if err != nil {
		return err
	}
	now := time.Now()
	cmd.CommandId, cmd.PoolId = newCommandID(), p.ID
	cmd.IssuedAtUnixMs, cmd.ExpiresAtUnixMs = now.UnixMilli(), now.Add(commandTTL).UnixMilli()
	payload, err := runenvelope.SealCommand(key, cmd)
	if err != nil {
		return err
	}
	tlsConf, err := d.ClientTLS("")
	if err != nil {
		return err
	}
	conn, err := controlplane.Connect(ctx, p.Broker, tlsConf)
	if err != nil {
		return err
	}
	defer conn.Close()
	answers := newAnswerWaiter(cmd.GetCommandId())
	// Subscribed before publishing, so that no answer can be missed.
	if err := conn.Subscribe(ctx, mqtttopic.Events(p.ID), answers.take); err != nil {
		return err
	}
	if err := conn.Publish(ctx, mqtttopic.Commands(p.ID), payload); err != nil {
		return err
	}
	fmt.Fprintf(out, "command %s sent to pool %s; waiting for its answer\n", cmd.GetCommandId(), p.Name)
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	res, gateway, err := answers.wait(wctx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("no gateway of pool %s answered command %s within %s: is one connected? (hangarctl workers --dir %s --pool %s); the command stays valid until %s",
			p.Name, cmd.GetCommandId(), wait, dir, pool, time.UnixMilli(cmd.GetExpiresAtUnixMs()).UTC().Format(time.RFC3339))
	}
	if res.GetStatus() == eventv1.CommandStatus_COMMAND_STATUS_APPLIED {
		fmt.Fprintf(out, "applied by gateway %s: %s\n", gateway, res.GetMessage())
		return nil
	}
	return fmt.Errorf("refused by gateway %s (%s): %s", gateway, refusalName(res.GetRefusal()), res.GetMessage())
}

// answerWaiter collects the CommandResults of one command from the events
// topic and decides which one is the answer (hangar.event.v1.CommandResult).
type answerWaiter struct {
	id      string
	mu      sync.Mutex
	applied *answer
	refused *answer // a final refusal (the gateway knew the target)
	unknown *answer // a refusal for a target the gateway does not know
	changed chan struct{}
}

type answer struct {
	res     *eventv1.CommandResult
	gateway string
	at      time.Time
}

func newAnswerWaiter(id string) *answerWaiter {
	return &answerWaiter{id: id, changed: make(chan struct{}, 1)}
}

// take reads one event payload; anything that is not an answer to this
// command is ignored.
func (w *answerWaiter) take(payload []byte) {
	var ev eventv1.Event
	if proto.Unmarshal(payload, &ev) != nil {
		return
	}
	res := ev.GetCommandResult()
	if res == nil || res.GetCommandId() != w.id {
		return
	}
	a := &answer{res: res, gateway: ev.GetWorkerId(), at: time.Now()}
	w.mu.Lock()
	switch {
	case res.GetStatus() == eventv1.CommandStatus_COMMAND_STATUS_APPLIED:
		if w.applied == nil {
			w.applied = a
		}
	case res.GetRefusal() == eventv1.CommandRefusal_COMMAND_REFUSAL_UNKNOWN_RUN,
		res.GetRefusal() == eventv1.CommandRefusal_COMMAND_REFUSAL_UNKNOWN_WORKER:
		if w.unknown == nil {
			w.unknown = a
		}
	default:
		if w.refused == nil {
			w.refused = a
		}
	}
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// wait returns the answer: the first APPLIED or final refusal; a refusal for
// an unknown target once unknownSettle has passed without either.
func (w *answerWaiter) wait(ctx context.Context) (*eventv1.CommandResult, string, error) {
	for {
		w.mu.Lock()
		applied, refused, unknown := w.applied, w.refused, w.unknown
		w.mu.Unlock()
		switch {
		case applied != nil:
			return applied.res, applied.gateway, nil
		case refused != nil:
			return refused.res, refused.gateway, nil
		}
		left := time.Hour
		if unknown != nil {
			if left = time.Until(unknown.at.Add(unknownSettle)); left <= 0 {
				return unknown.res, unknown.gateway, nil
			}
		}
		t := time.NewTimer(left)
		select {
		case <-ctx.Done():
			t.Stop()
			if unknown != nil {
				return unknown.res, unknown.gateway, nil
			}
			return nil, "", ctx.Err()
		case <-w.changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// newCommandID returns "cmd-" and 32 hex digits: never mistaken for a run id.
func newCommandID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "cmd-" + hex.EncodeToString(b[:])
}

// refusalName is a refusal without its enum prefix, lower case, spaces for
// underscores ("unknown run").
func refusalName(r eventv1.CommandRefusal) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(r.String(), "COMMAND_REFUSAL_")), "_", " ")
}
