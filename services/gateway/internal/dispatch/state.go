package dispatch

// RunState is where a run stands in the dispatcher.
type RunState int

const (
	// RunUnknown: not held here (never admitted by this gateway, or ended).
	RunUnknown RunState = iota
	// RunQueued: admitted, waiting for an executor slot.
	RunQueued
	// RunLeased: assigned to an executor under a lease.
	RunLeased
	// RunWaiting: stopped after plan, waiting for confirmation.
	RunWaiting
)

// String names the state for logs and messages.
func (s RunState) String() string {
	switch s {
	case RunQueued:
		return "queued"
	case RunLeased:
		return "leased"
	case RunWaiting:
		return "waiting for confirmation"
	}
	return "unknown"
}

// Lookup returns where a run stands and whether it is a confirmed run
// resuming from its hand-off (queued or leased again after Confirm).
func (d *Dispatcher) Lookup(runID string) (state RunState, resumed bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if l, ok := d.runs[runID]; ok {
		return RunLeased, l.run.handOff != nil
	}
	if _, ok := d.parked[runID]; ok {
		return RunWaiting, false
	}
	for _, r := range d.queue {
		if r.ID == runID {
			return RunQueued, r.handOff != nil
		}
	}
	return RunUnknown, false
}

// Known reports whether a run is queued, leased or waiting for confirmation
// here.
func (d *Dispatcher) Known(runID string) bool {
	st, _ := d.Lookup(runID)
	return st != RunUnknown
}
