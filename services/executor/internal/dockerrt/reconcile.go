package dockerrt

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/moby/moby/client"
)

// Reap removes every container and volume that this executor's runtime
// created (labels hangar.managed=true and hangar.executor-id=<ExecutorID>)
// and returns the ids of the runs they belonged to, sorted. Call it when no
// run of this executor is in progress, e.g. at start after a crash.
func (r *Runtime) Reap(ctx context.Context) ([]string, error) {
	f := r.filters()
	runs := map[string]bool{}
	var errs []error
	list, err := r.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("reap: list containers: %w", err)
	}
	for _, c := range list.Items {
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
	}
	slices.Sort(ids)
	if len(ids) > 0 {
		r.log.Info("reaped leftovers of earlier runs", "run_ids", ids)
	}
	return ids, errors.Join(errs...)
}

// filters select what this executor created; runID, if given, narrows them
// to one run.
func (r *Runtime) filters(runID ...string) client.Filters {
	f := client.Filters{}
	f.Add("label", LabelManaged+"=true", LabelExecutorID+"="+r.opts.ExecutorID)
	for _, id := range runID {
		f.Add("label", LabelRunID+"="+id)
	}
	return f
}
