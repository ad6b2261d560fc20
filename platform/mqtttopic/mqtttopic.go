// Package mqtttopic names the MQTT topics of a pool, as hangar.event.v1 documents
// them. Every party (control plane, gateway, broker ACLs) builds topics here.
package mqtttopic

// Prefix is the root of every Hangar topic.
const Prefix = "hangar/pools/"

// ControlPlaneCN is the certificate common name of the control plane's client.
const ControlPlaneCN = "hangar-control-plane"

// Runs is where the control plane publishes run envelopes for a pool.
func Runs(poolID string) string { return Prefix + poolID + "/runs" }

// Commands is where the control plane publishes commands for a pool.
func Commands(poolID string) string { return Prefix + poolID + "/commands" }

// Events is where a pool publishes run events.
func Events(poolID string) string { return Prefix + poolID + "/events" }

// Heartbeats is where a pool publishes heartbeats and its Last Will.
func Heartbeats(poolID string) string { return Prefix + poolID + "/heartbeats" }

// SharedRuns is the shared subscription through which several gateways of one pool
// split its runs between them: each run is delivered to exactly one. The group
// name is the pool's secret (the gateway derives it from the pool's key), so
// that no other pool can join the group and take turns of its runs.
func SharedRuns(group, poolID string) string { return "$share/" + group + "/" + Runs(poolID) }
