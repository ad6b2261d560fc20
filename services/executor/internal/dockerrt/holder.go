package dockerrt

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/hangar-dev/hangar/platform/runimage"
)

// LabelHolder marks a network holder (see holders).
const LabelHolder = "hangar.network-holder"

// holderImage is the image of the network holders: the relay alone, which
// the holder runs with --hold.
const holderImage = "hangar/network-holder:latest"

// holderPids and holderMemory bound a holder: one process, little memory.
const (
	holderPids   = 8
	holderMemory = 32 << 20
)

// holders keeps one network holder started ahead: a small container on the
// run network that does nothing but hold its network namespace. A run takes
// it, and its phase containers join that namespace (NetworkMode
// container:<holder>) instead of each getting one of their own, which on a
// user-defined network costs the engine the most of a container's start
// (the embedded DNS server's set-up: a re-exec of dockerd and iptables in the
// namespace; bench/README.md). Each holder serves one run and is removed with
// it, so runs keep a namespace each, on the run network, as before; phases of
// one run share theirs, one after the other.
type holders struct {
	mu      sync.Mutex
	idle    []string // started, not yet taken
	filling bool
	closed  bool
	image   bool // holderImage imported
	wg      sync.WaitGroup
}

// holdersEnabled: only on a user-defined network with the engine's own
// runtime. The default networks have no embedded DNS to save; "none" and
// "host" need no holder; a sandboxing runtime (gVisor) keeps a network
// stack per sandbox, which another container cannot join.
func (r *Runtime) holdersEnabled() bool {
	switch n := r.opts.Network; {
	case n == "bridge", n == "default", n == "none", n == "host", strings.HasPrefix(n, "container:"):
		return false
	}
	return (r.opts.Runtime == "" || r.opts.Runtime == "runc") && r.opts.RelayPath != ""
}

// Warm starts a network holder now if none is idle, and waits for it (or
// for the one being started): the executor calls it at start, so that its
// first run finds one.
func (r *Runtime) Warm(ctx context.Context) error {
	if !r.holdersEnabled() {
		return nil
	}
	for {
		r.hold.mu.Lock()
		switch {
		case r.hold.closed || len(r.hold.idle) > 0:
			r.hold.mu.Unlock()
			return nil
		case r.hold.filling:
			r.hold.mu.Unlock()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		r.hold.filling = true
		r.hold.wg.Add(1)
		r.hold.mu.Unlock()
		return r.fill(ctx)
	}
}

// refill starts a holder in the background if none is idle or starting.
func (r *Runtime) refill() {
	r.hold.mu.Lock()
	defer r.hold.mu.Unlock()
	if r.hold.closed || len(r.hold.idle) > 0 || r.hold.filling {
		return
	}
	r.hold.filling = true
	r.hold.wg.Add(1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := r.fill(ctx); err != nil {
			r.log.Warn("network holder not started: the next run sets up its own network", "err", err)
		}
	}()
}

// fill creates and starts one holder; the caller set filling and wg.
func (r *Runtime) fill(ctx context.Context) error {
	defer r.hold.wg.Done()
	id, err := r.startHolder(ctx)
	r.hold.mu.Lock()
	r.hold.filling = false
	closed := r.hold.closed
	if err == nil && !closed {
		r.hold.idle = append(r.hold.idle, id)
	}
	r.hold.mu.Unlock()
	if err == nil && closed {
		return removeContainer(context.WithoutCancel(ctx), r.cli, id)
	}
	return err
}

func (r *Runtime) startHolder(ctx context.Context) (string, error) {
	if err := r.holderImage(ctx); err != nil {
		return "", err
	}
	labels := map[string]string{LabelManaged: "true", LabelExecutorID: r.opts.ExecutorID, LabelHolder: "true"}
	if r.opts.PoolID != "" {
		labels[LabelPoolID] = r.opts.PoolID
	}
	pids := int64(holderPids)
	host := r.hostConfig(r.opts.Network, nil, &pids)
	host.Memory, host.NanoCPUs = holderMemory, 0
	host.ReadonlyRootfs = true
	res, err := r.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config: &container.Config{
			Image:      holderImage,
			Entrypoint: []string{"/bin/hangar-relay", "--hold"},
			Cmd:        []string{},
			Labels:     labels,
		},
		HostConfig: host,
	})
	if err != nil {
		return "", fmt.Errorf("create network holder: %w", err)
	}
	if _, err := r.cli.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
		_ = removeContainer(context.WithoutCancel(ctx), r.cli, res.ID)
		return "", fmt.Errorf("start network holder: %w", err)
	}
	return res.ID, nil
}

// holderImage imports holderImage (the relay binary as /bin/hangar-relay)
// unless the engine has it with this relay.
func (r *Runtime) holderImage(ctx context.Context) error {
	r.hold.mu.Lock()
	done := r.hold.image
	r.hold.mu.Unlock()
	if done {
		return nil
	}
	bin, err := os.ReadFile(r.opts.RelayPath)
	if err != nil {
		return fmt.Errorf("network holder image: %w", err)
	}
	fs, err := runimage.Shell("network holder", "hangar-relay", bin, nil)
	if err != nil {
		return err
	}
	if _, err := runimage.Ensure(ctx, ImageEngine{API: r.cli}, holderImage, fs); err != nil {
		return err
	}
	r.hold.mu.Lock()
	r.hold.image = true
	r.hold.mu.Unlock()
	return nil
}

// takeHolder returns a started holder for one run, or "" when none is idle
// or it no longer runs (the run then sets up its own network, as without
// holders), and starts the next one in the background.
func (r *Runtime) takeHolder(ctx context.Context) string {
	if !r.holdersEnabled() {
		return ""
	}
	r.hold.mu.Lock()
	var id string
	if n := len(r.hold.idle); n > 0 {
		id, r.hold.idle = r.hold.idle[n-1], r.hold.idle[:n-1]
	}
	r.hold.mu.Unlock()
	r.refill()
	if id == "" {
		return ""
	}
	res, err := r.cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil || res.Container.State == nil || !res.Container.State.Running {
		_ = removeContainer(context.WithoutCancel(ctx), r.cli, id)
		return ""
	}
	return id
}

// removeHolders removes the holders of a run that ended, in the background
// (Close waits for it); after Close, at once. What an executor's crash
// leaves, Reap removes at its next start: no run's container joins them
// any more.
func (r *Runtime) removeHolders(ids []string) {
	if len(ids) == 0 {
		return
	}
	remove := func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		for _, id := range ids {
			if err := removeContainer(ctx, r.cli, id); err != nil {
				r.log.Error("remove network holder", "container", id, "err", err)
			}
		}
	}
	r.hold.mu.Lock()
	if r.hold.closed {
		r.hold.mu.Unlock()
		remove()
		return
	}
	r.hold.wg.Add(1)
	r.hold.mu.Unlock()
	go func() {
		defer r.hold.wg.Done()
		remove()
	}()
}

// Close removes the idle holders, after any being started or removed: the executor
// calls it when it stops (what a crash leaves, Reap removes at the next
// start).
func (r *Runtime) Close() {
	r.hold.mu.Lock()
	r.hold.closed = true
	r.hold.mu.Unlock()
	r.hold.wg.Wait()
	r.hold.mu.Lock()
	idle := r.hold.idle
	r.hold.idle = nil
	r.hold.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	for _, id := range idle {
		if err := removeContainer(ctx, r.cli, id); err != nil {
			r.log.Warn("remove network holder", "err", err)
		}
	}
}

// holderOf returns the holder whose network a container of a run joined
// ("" if none).
func holderOf(c container.Summary) string {
	if id, ok := strings.CutPrefix(c.HostConfig.NetworkMode, "container:"); ok {
		return id
	}
	return ""
}

// addHolders appends to ids the holders the run containers cs joined.
func addHolders(ids []string, cs []container.Summary) []string {
	for _, c := range cs {
		if h := holderOf(c); h != "" && !slices.Contains(ids, h) {
			ids = append(ids, h)
		}
	}
	return ids
}
