package commands

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/platform/runenvelope"
	"github.com/hangar-dev/hangar/services/gateway/internal/dispatch"
	"github.com/hangar-dev/hangar/services/gateway/internal/intake"
	"github.com/hangar-dev/hangar/services/gateway/internal/seen"
)

// answers records what the handler publishes (the outbox's part).
type answers struct {
	mu  sync.Mutex
	res []*eventv1.CommandResult
}

func (a *answers) CommandResult(r *eventv1.CommandResult) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.res = append(a.res, r)
}

func (a *answers) last(t *testing.T) *eventv1.CommandResult {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.res) == 0 {
		t.Fatal("no answer")
	}
	return a.res[len(a.res)-1]
}

// events records the dispatcher's run events.
type events struct{}

func (events) Run(string, map[string]string, *eventv1.Event)           {}
func (events) Reserve(string) uint64                                   { return 1 }
func (events) RunAt(string, uint64, map[string]string, *eventv1.Event) {}

type fixture struct {
	h    *Handler
	ans  *answers
	disp *dispatch.Dispatcher
	runs *seen.Store
	key  ed25519.PrivateKey
	dir  string
}

func newFixture(t *testing.T, dir string) *fixture {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	return openFixture(t, dir, pub, priv)
}

func openFixture(t *testing.T, dir string, pub ed25519.PublicKey, priv ed25519.PrivateKey) *fixture {
	t.Helper()
	runs, err := seen.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := seen.OpenFile(dir, "seen-commands.log", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { runs.Close(); ids.Close() })
	disp := dispatch.New(dispatch.Config{PoolID: "pool-a", Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()}, events{})
	ans := &answers{}
	h := New(Deps{Opener: &runenvelope.Opener{PoolID: "pool-a", VerifyKey: pub}, Dispatcher: disp, Runs: runs, IDs: ids,
		Answers: ans, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	return &fixture{h: h, ans: ans, disp: disp, runs: runs, key: priv, dir: dir}
}

func (f *fixture) send(t *testing.T, id string, cmd *eventv1.Command) *eventv1.CommandResult {
	t.Helper()
	cmd.CommandId, cmd.PoolId = id, "pool-a"
	cmd.IssuedAtUnixMs = time.Now().UnixMilli()
	cmd.ExpiresAtUnixMs = time.Now().Add(time.Hour).UnixMilli()
	b, err := runenvelope.SealCommand(f.key, cmd)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.h.Handle(b); err != nil {
		t.Fatal(err)
	}
	return f.ans.last(t)
}

func cancel(run string) *eventv1.Command {
	return &eventv1.Command{Kind: &eventv1.Command_Cancel{Cancel: &eventv1.CancelRun{RunId: run}}}
}

func confirm(run string) *eventv1.Command {
	return &eventv1.Command{Kind: &eventv1.Command_Confirm{Confirm: &eventv1.ConfirmRun{RunId: run}}}
}

func TestAnswers(t *testing.T) {
	f := newFixture(t, t.TempDir())
	// A queued run (no executor attached), received and decided by the intake.
	if _, err := f.runs.Record("r1", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := f.disp.Admit(context.Background(), &intake.Run{ID: "r1", Spec: &runv1.RunSpec{}, AdmittedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := f.runs.Done("r1"); err != nil {
		t.Fatal(err)
	}
	applied, refused := eventv1.CommandStatus_COMMAND_STATUS_APPLIED, eventv1.CommandStatus_COMMAND_STATUS_REFUSED
	for _, tc := range []struct {
		name    string
		id      string
		cmd     *eventv1.Command
		status  eventv1.CommandStatus
		refusal eventv1.CommandRefusal
	}{
		{"confirm a queued run", "cmd-1", confirm("r1"), refused, eventv1.CommandRefusal_COMMAND_REFUSAL_NOT_WAITING_FOR_CONFIRMATION},
		{"cancel a queued run", "cmd-2", cancel("r1"), applied, 0},
		{"cancel it again", "cmd-3", cancel("r1"), refused, eventv1.CommandRefusal_COMMAND_REFUSAL_ALREADY_FINISHED},
		{"confirm a finished run", "cmd-4", confirm("r1"), refused, eventv1.CommandRefusal_COMMAND_REFUSAL_ALREADY_FINISHED},
		{"cancel an unknown run", "cmd-5", cancel("nope"), refused, eventv1.CommandRefusal_COMMAND_REFUSAL_UNKNOWN_RUN},
		{"confirm an unknown run", "cmd-6", confirm("nope"), refused, eventv1.CommandRefusal_COMMAND_REFUSAL_UNKNOWN_RUN},
		{"drain an unknown executor", "cmd-7", &eventv1.Command{Kind: &eventv1.Command_Drain{Drain: &eventv1.DrainWorker{WorkerId: "x"}}}, refused, eventv1.CommandRefusal_COMMAND_REFUSAL_UNKNOWN_WORKER},
		{"undrain an unknown executor", "cmd-8", &eventv1.Command{Kind: &eventv1.Command_Undrain{Undrain: &eventv1.UndrainWorker{WorkerId: "x"}}}, refused, eventv1.CommandRefusal_COMMAND_REFUSAL_UNKNOWN_WORKER},
		{"cycle", "cmd-9", &eventv1.Command{Kind: &eventv1.Command_Cycle{Cycle: &eventv1.CyclePool{}}}, applied, 0},
		{"replay of a handled command", "cmd-2", cancel("r1"), refused, eventv1.CommandRefusal_COMMAND_REFUSAL_REPLAYED},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := f.send(t, tc.id, tc.cmd)
			if res.GetStatus() != tc.status || res.GetRefusal() != tc.refusal || res.GetCommandId() != tc.id || res.GetMessage() == "" {
				t.Fatalf("answer = %v, want %v %v", res, tc.status, tc.refusal)
			}
		})
	}
}

func TestCommandIDsSurviveARestart(t *testing.T) {
	dir := t.TempDir()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	f := openFixture(t, dir, pub, priv)
	if res := f.send(t, "cmd-a", &eventv1.Command{Kind: &eventv1.Command_Cycle{Cycle: &eventv1.CyclePool{}}}); res.GetStatus() != eventv1.CommandStatus_COMMAND_STATUS_APPLIED {
		t.Fatalf("answer = %v", res)
	}
	f.runs.Close()
	f2 := openFixture(t, dir, pub, priv)
	if res := f2.send(t, "cmd-a", &eventv1.Command{Kind: &eventv1.Command_Cycle{Cycle: &eventv1.CyclePool{}}}); res.GetRefusal() != eventv1.CommandRefusal_COMMAND_REFUSAL_REPLAYED {
		t.Fatalf("a command replayed after a restart was not refused: %v", res)
	}
}

func TestUnverifiedCommands(t *testing.T) {
	f := newFixture(t, t.TempDir())
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	cmd := cancel("r1")
	cmd.CommandId, cmd.PoolId = "cmd-x", "pool-a"
	cmd.IssuedAtUnixMs, cmd.ExpiresAtUnixMs = time.Now().UnixMilli(), time.Now().Add(time.Hour).UnixMilli()
	forged, _ := runenvelope.SealCommand(other, cmd)
	if err := f.h.Handle(forged); err != nil {
		t.Fatal(err)
	}
	if len(f.ans.res) != 0 {
		t.Fatalf("a command with a bad signature was answered: %v", f.ans.res)
	}
	// Signed, but expired: answered as refused.
	cmd.CommandId = "cmd-y"
	cmd.IssuedAtUnixMs, cmd.ExpiresAtUnixMs = time.Now().Add(-3*time.Hour).UnixMilli(), time.Now().Add(-2*time.Hour).UnixMilli()
	old, _ := runenvelope.SealCommand(f.key, cmd)
	if err := f.h.Handle(old); err != nil {
		t.Fatal(err)
	}
	if res := f.ans.last(t); res.GetCommandId() != "cmd-y" || res.GetRefusal() != eventv1.CommandRefusal_COMMAND_REFUSAL_EXPIRED {
		t.Fatalf("answer = %v", res)
	}
}
