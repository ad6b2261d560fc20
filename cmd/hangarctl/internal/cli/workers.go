package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/controlplane"
	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/cpdir"
	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/platform/mqtttopic"
)

// runWorkers lists a pool's workers from their heartbeats.
func runWorkers(ctx context.Context, e env) error {
	fs := newFlags("workers", e)
	dir := fs.String("dir", "", "control-plane directory")
	pool := fs.String("pool", "", "pool name")
	wait := fs.Duration("wait", 20*time.Second, "how long to listen for heartbeats (a little over the pool's heartbeat interval)")
	if err := parseFlags(fs, e, 0); err != nil {
		return err
	}
	if *dir == "" || *pool == "" {
		return fmt.Errorf("%w: --dir and --pool are required", errUsage)
	}
	d, err := cpdir.Open(*dir)
	if err != nil {
		return err
	}
	p, err := d.Pool(*pool)
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
	var mu sync.Mutex
	latest := map[string]*eventv1.Heartbeat{}
	if err := conn.Subscribe(ctx, mqtttopic.Heartbeats(p.ID), func(b []byte) {
		hb := &eventv1.Heartbeat{}
		if proto.Unmarshal(b, hb) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if old, ok := latest[hb.GetWorkerId()]; !ok || old.GetTimeUnixMs() <= hb.GetTimeUnixMs() {
			latest[hb.GetWorkerId()] = hb
		}
	}); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(*wait):
	}
	mu.Lock()
	defer mu.Unlock()
	if len(latest) == 0 {
		return fmt.Errorf("no heartbeat from pool %s within %v: is its gateway running?", p.Name, *wait)
	}
	return printWorkers(e.stdout, latest, time.Now())
}

// printWorkers writes the workers table: one line per gateway (from its
// latest heartbeat) and per executor it reports. STATE is the worker's state
// (idle, busy, draining, ...), SLOTS the executor's busy/total slots.
func printWorkers(w io.Writer, latest map[string]*eventv1.Heartbeat, now time.Time) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tKIND\tSTATE\tSLOTS\tMETADATA\tNOTE")
	ids := make([]string, 0, len(latest))
	for id := range latest {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		hb := latest[id]
		fmt.Fprintf(tw, "%s\tgateway\t%s\t-\t%s\tlast heartbeat %s ago\n", id, stateName(hb.GetState()), tags(hb.GetMetadata()),
			now.Sub(time.UnixMilli(hb.GetTimeUnixMs())).Round(time.Second))
		for _, ex := range hb.GetExecutors() {
			fmt.Fprintf(tw, "%s\texecutor\t%s\t%d/%d\t%s\t%s\n", ex.GetExecutorId(), stateName(ex.GetState()), ex.GetBusy(), ex.GetSlots(),
				tags(ex.GetMetadata()), ex.GetUnavailableReason())
		}
	}
	return tw.Flush()
}

func stateName(s eventv1.WorkerState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "WORKER_STATE_"))
}

func tags(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

// workerCommand sends drain or undrain for one worker.
func workerCommand(drain bool) func(context.Context, env) error {
	name := "worker undrain"
	if drain {
		name = "worker drain"
	}
	return func(ctx context.Context, e env) error {
		fs := newFlags(name, e)
		dir := fs.String("dir", "", "control-plane directory")
		pool := fs.String("pool", "", "pool name")
		wait := answerTimeoutFlag(fs)
		if err := parseFlags(fs, e, 1); err != nil {
			return err
		}
		if *dir == "" || *pool == "" || fs.NArg() != 1 {
			return fmt.Errorf("%w: usage: hangarctl %s --dir DIR --pool NAME WORKER_ID", errUsage, name)
		}
		cmd := &eventv1.Command{Kind: &eventv1.Command_Undrain{Undrain: &eventv1.UndrainWorker{WorkerId: fs.Arg(0)}}}
		if drain {
			cmd.Kind = &eventv1.Command_Drain{Drain: &eventv1.DrainWorker{WorkerId: fs.Arg(0)}}
		}
		return sendCommand(ctx, *dir, *pool, cmd, *wait, e.stdout)
	}
}

// runPoolCycle asks every worker of a pool to drain and exit once idle.
func runPoolCycle(ctx context.Context, e env) error {
	fs := newFlags("pool cycle", e)
	dir := fs.String("dir", "", "control-plane directory")
	wait := answerTimeoutFlag(fs)
	if err := parseFlags(fs, e, 1); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() != 1 {
		return fmt.Errorf("%w: usage: hangarctl pool cycle --dir DIR NAME", errUsage)
	}
	return sendCommand(ctx, *dir, fs.Arg(0), &eventv1.Command{Kind: &eventv1.Command_Cycle{Cycle: &eventv1.CyclePool{}}}, *wait, e.stdout)
}
