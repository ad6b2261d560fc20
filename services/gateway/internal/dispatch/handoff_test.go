package dispatch

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	workv1 "github.com/hangar-dev/hangar/gen/go/hangar/work/v1"
	"github.com/hangar-dev/hangar/platform/sealedbox"
	"github.com/hangar-dev/hangar/services/gateway/internal/runstore"
)

func (r *recorder) unconfirmed(runID string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.ev {
		if e.GetUnconfirmed() != nil && e.RunId == runID {
			n++
		}
	}
	return n
}

// TestUnconfirmedRunIsConfirmedAfterARestart: a tracked run stops for
// confirmation, the gateway keeps it (not finished) across a restart, and a
// confirmation queues it with a higher epoch and the unwrapped resume state.
func TestUnconfirmedRunIsConfirmedAfterARestart(t *testing.T) {
	poolKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	store, err := runstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	start := func() (*Dispatcher, *recorder, workv1.WorkServiceClient) {
		rec := &recorder{}
		d := New(Config{PoolID: "pool-a", LeaseDuration: 10 * time.Second, Logger: slog.New(slog.DiscardHandler),
			Registry: prometheus.NewRegistry(), Store: store, PoolKey: poolKey}, rec)
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		workv1.RegisterWorkServiceServer(srv, d)
		go srv.Serve(lis)
		t.Cleanup(srv.Stop)
		conn, _ := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		t.Cleanup(func() { conn.Close() })
		return d, rec, workv1.NewWorkServiceClient(conn)
	}

	d, rec, c := start()
	a := attach(t, c, &workv1.Hello{ExecutorId: "a", Slots: 1})
	r := run("t1")
	r.Envelope = []byte("sealed")
	if err := d.Admit(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	first := a.next().GetAssign()
	if first.GetResume() != nil {
		t.Fatalf("first assignment resumes: %v", first)
	}
	if d.Confirm("t1") {
		t.Fatal("a leased run was confirmed")
	}

	content := make([]byte, sealedbox.KeySize)
	rand.Read(content)
	wrapped, err := sealedbox.WrapKey(&poolKey.PublicKey, content)
	if err != nil {
		t.Fatal(err)
	}
	hand := &workv1.HandOff{StateKey: "runs/state/t1.bin", WrappedKey: wrapped, Nonce: bytes.Repeat([]byte{7}, 12), Sha256: "ab", Size: 42}
	a.send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Finish{Finish: &workv1.Finish{
		LeaseId: first.LeaseId, Epoch: first.Epoch,
		Unconfirmed: &eventv1.RunUnconfirmed{StateKey: hand.StateKey}, HandOff: hand,
	}}})
	if m := a.next(); m.GetRevoked().GetReason() != "finished" {
		t.Fatalf("unconfirmed finish not acknowledged: %v", m)
	}
	if n := rec.unconfirmed("t1"); n != 1 {
		t.Fatalf("unconfirmed events = %d", n)
	}
	if f := rec.finals("t1"); len(f) != 0 {
		t.Fatalf("an unconfirmed run was finished: %v", f)
	}
	if !d.Known("t1") {
		t.Fatal("unconfirmed run forgotten")
	}
	recs, _ := store.Load()
	if len(recs) != 1 || recs[0].State != runstore.StateUnconfirmed || recs[0].LeaseID != "" || recs[0].Epoch != first.Epoch ||
		recs[0].HandOff == nil || !bytes.Equal(recs[0].HandOff.WrappedKey, wrapped) || recs[0].HandOff.StateKey != hand.StateKey {
		t.Fatalf("records = %+v", recs)
	}
	if raw, err := os.ReadFile(filepath.Join(dir, "runs", "t1.json")); err != nil || bytes.Contains(raw, content) ||
		bytes.Contains(raw, []byte(base64.StdEncoding.EncodeToString(content))) {
		t.Fatal("the content key reached the run store")
	}

	// The gateway restarts; a confirmation for an unknown run is ignored.
	d2, rec2, c2 := start()
	d2.Recover(opensAll)
	if d2.Confirm("nope") {
		t.Fatal("an unknown run was confirmed")
	}
	a2 := attach(t, c2, &workv1.Hello{ExecutorId: "a", Slots: 1})
	if !d2.Confirm("t1") {
		t.Fatal("the recovered unconfirmed run was not confirmed")
	}
	as := a2.next().GetAssign()
	res := as.GetResume()
	if as.GetRunId() != "t1" || as.GetEpoch() <= first.GetEpoch() || res == nil {
		t.Fatalf("resumed assignment = %v (first epoch %d)", as, first.GetEpoch())
	}
	if res.GetStateKey() != hand.StateKey || !bytes.Equal(res.GetKey(), content) || !bytes.Equal(res.GetNonce(), hand.Nonce) ||
		res.GetSha256() != hand.Sha256 || res.GetSize() != hand.Size || !slices.Equal(res.GetPhases(), []string{"apply"}) {
		t.Fatalf("resume = %v", res)
	}
	if d2.Confirm("t1") {
		t.Fatal("a resumed run was confirmed twice")
	}
	recs, _ = store.Load()
	if len(recs) != 1 || recs[0].State != "" || recs[0].LeaseID != as.LeaseId || recs[0].Epoch != as.Epoch || recs[0].HandOff == nil {
		t.Fatalf("records while resuming = %+v", recs)
	}

	a2.send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Finish{Finish: &workv1.Finish{
		LeaseId: as.LeaseId, Epoch: as.Epoch, Result: &eventv1.RunFinished{Outcome: eventv1.Outcome_OUTCOME_FINISHED},
	}}})
	if m := a2.next(); m.GetRevoked().GetReason() != "finished" {
		t.Fatalf("resumed finish not acknowledged: %v", m)
	}
	if f := rec2.finals("t1"); len(f) != 1 || f[0].GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED {
		t.Fatalf("finals = %v", f)
	}
	if recs, _ := store.Load(); len(recs) != 0 {
		t.Fatalf("records after the end = %+v", recs)
	}
}

func TestUnconfirmedWithoutHandOffFailsAndCancelEndsAWaitingRun(t *testing.T) {
	d, rec, c := startDispatcher(t, 10*time.Second)
	a := attach(t, c, &workv1.Hello{ExecutorId: "a", Slots: 1})
	d.Admit(context.Background(), run("u1"))
	as := a.next().GetAssign()
	a.send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Finish{Finish: &workv1.Finish{
		LeaseId: as.LeaseId, Epoch: as.Epoch, Unconfirmed: &eventv1.RunUnconfirmed{StateKey: "k"},
	}}})
	a.next()
	if f := rec.finals("u1"); len(f) != 1 || f[0].GetOutcome() != eventv1.Outcome_OUTCOME_FAILED {
		t.Fatalf("finals = %v", f)
	}

	d.Admit(context.Background(), run("u2"))
	as = a.next().GetAssign()
	a.send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Finish{Finish: &workv1.Finish{
		LeaseId: as.LeaseId, Epoch: as.Epoch, Unconfirmed: &eventv1.RunUnconfirmed{StateKey: "k"}, HandOff: &workv1.HandOff{StateKey: "k"},
	}}})
	a.next()
	if !d.Cancel("u2", "no") {
		t.Fatal("cancel of an unconfirmed run: unknown")
	}
	if f := rec.finals("u2"); len(f) != 1 || f[0].GetOutcome() != eventv1.Outcome_OUTCOME_STOPPED {
		t.Fatalf("finals = %v", f)
	}
	if d.Known("u2") {
		t.Fatal("cancelled run still known")
	}
}
