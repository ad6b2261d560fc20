package dockerrt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// Reap removes every container and volume that this executor's runtime
// created (labels hangar.managed=true and hangar.executor-id=<ExecutorID>,
// and hangar.pool-id absent or Options.PoolID: see owns),
// except those of the runs in keep (re-adopted), and the relay directories
// of the runs it removes, and returns the ids of the runs they belonged to,
// sorted. Network holders (holder.go) go too, but for those the kept runs'
// containers joined and those this runtime started. Call it at start, after
// a crash, once the runs to re-adopt are known. Containers of other executors on the same engine are never touched.
func (r *Runtime) Reap(ctx context.Context, keep ...string) ([]string, error) {
	f := r.filters()
	runs := map[string]bool{}
	var errs []error
	list, err := r.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("reap: list containers: %w", err)
	}
	// The network holders of the runs kept, and those started by this
	// runtime, stay; other holders, started by an earlier life of this
	// executor and never taken or of runs not kept, go.
	var kept []container.Summary
	for _, c := range list.Items {
		if r.owns(c.Labels) && slices.Contains(keep, c.Labels[LabelRunID]) {
			kept = append(kept, c)
		}
	}
	r.hold.mu.Lock()
	stay := addHolders(slices.Clone(r.hold.idle), kept)
	r.hold.mu.Unlock()
	for _, c := range list.Items {
		if !r.owns(c.Labels) || slices.Contains(keep, c.Labels[LabelRunID]) || slices.Contains(stay, c.ID) {
			continue
		}
		runs[c.Labels[LabelRunID]] = true
		if err := removeContainer(ctx, r.cli, c.ID); err != nil {
			errs = append(errs, fmt.Errorf("reap: %w", err))
		}
	}
	vols, err := r.cli.VolumeList(ctx, client.VolumeListOptions{Filters: f})
	if err != nil {
		errs = append(errs, fmt.Errorf("reap: list volumes: %w", err))
	} else {
		for _, v := range vols.Items {
			if !r.owns(v.Labels) || slices.Contains(keep, v.Labels[LabelRunID]) {
				continue
			}
			runs[v.Labels[LabelRunID]] = true
			if err := removeVolume(ctx, r.cli, v.Name); err != nil {
				errs = append(errs, fmt.Errorf("reap: %w", err))
			}
		}
	}
	delete(runs, "")
	ids := make([]string, 0, len(runs))
	for id := range runs {
		ids = append(ids, id)
		if r.opts.IODir != "" {
			if err := os.RemoveAll(r.runIODir(id)); err != nil {
				errs = append(errs, fmt.Errorf("reap: %w", err))
			}
		}
	}
	slices.Sort(ids)
	if len(ids) > 0 {
		r.log.Info("reaped leftovers of earlier runs", "run_ids", ids)
	}
	return ids, errors.Join(errs...)
}

// owns reports whether an object that filters selected is this executor's:
// the engine's label filter cannot say "this pool or no pool label", so the
// pool is checked here (Options.PoolID).
func (r *Runtime) owns(labels map[string]string) bool {
	p, ok := labels[LabelPoolID]
	return !ok || p == r.opts.PoolID
}

// filters select what this executor created, but for the pool (see owns);
// runID, if given, narrows them to one run.
func (r *Runtime) filters(runID ...string) client.Filters {
	f := client.Filters{}
	f.Add("label", LabelManaged+"=true", LabelExecutorID+"="+r.opts.ExecutorID)
	for _, id := range runID {
		f.Add("label", LabelRunID+"="+id)
	}
	return f
}

// ErrNotRunning: the phase of a run to re-adopt no longer runs.
var ErrNotRunning = errors.New("the run's phase is not running")

// Adoptable reports whether phase i of runID (a run of this executor) still
// runs, and returns the job's environment, which its container holds: the
// executor keeps no run's variables on its disk. It implements
// runner.Adopter.
func (r *Runtime) Adoptable(ctx context.Context, runID string, phase int) ([]string, error) {
	id, err := r.runningPhase(ctx, runID, phase)
	if err != nil {
		return nil, err
	}
	res, err := r.cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return nil, fmt.Errorf("inspect the container of run %s: %w", runID, err)
	}
	if res.Container.Config == nil {
		return nil, fmt.Errorf("inspect the container of run %s: no config", runID)
	}
	return res.Container.Config.Env, nil
}

// runningPhase returns the id of the running container of phase i of runID.
func (r *Runtime) runningPhase(ctx context.Context, runID string, phase int) (string, error) {
	f := r.filters(runID)
	f.Add("label", LabelPhaseIndex+"="+strconv.Itoa(phase))
	f.Add("status", "running")
	list, err := r.cli.ContainerList(ctx, client.ContainerListOptions{Filters: f})
	if err != nil {
		return "", fmt.Errorf("find the container of run %s: %w", runID, err)
	}
	list.Items = slices.DeleteFunc(list.Items, func(c container.Summary) bool { return !r.owns(c.Labels) })
	if len(list.Items) != 1 {
		return "", fmt.Errorf("%w (run %s, phase %d: %d running containers)", ErrNotRunning, runID, phase, len(list.Items))
	}
	return list.Items[0].ID, nil
}
