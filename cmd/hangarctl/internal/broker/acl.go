package broker

import (
	"strings"

	"github.com/hangar-dev/hangar/platform/ids"
)

// DefaultControlPlaneCN is the certificate CN of the control plane when
// Config.ControlPlaneCN is empty.
const DefaultControlPlaneCN = "hangar-control-plane"

// acl holds the topic rules of a Hangar broker. Identities are certificate CNs:
// the control plane's CN may read and write anything under hangar/; any other CN
// is a pool id, which may read only hangar/pools/{id}/runs and
// hangar/pools/{id}/commands (directly or through a shared subscription
// $share/{group}/...) and write only hangar/pools/{id}/events and
// hangar/pools/{id}/heartbeats. Wildcards are refused for pools.
type acl struct {
	controlPlaneCN string
}

// allowed reports whether identity may publish to topic (write) or subscribe
// to, or receive from, the topic or filter topic (read).
func (a acl) allowed(identity, topic string, write bool) bool {
	if identity == "" {
		return false
	}
	if !write {
		var ok bool
		if topic, ok = stripShare(topic); !ok {
			return false
		}
	}
	if identity == a.controlPlaneCN {
		// Any topic or filter whose first level is literally "hangar".
		return topic == "hangar" || strings.HasPrefix(topic, "hangar/")
	}
	if !ids.ValidPoolID(identity) {
		return false
	}
	base := "hangar/pools/" + identity + "/"
	if write {
		return topic == base+"events" || topic == base+"heartbeats"
	}
	return topic == base+"runs" || topic == base+"commands"
}

// stripShare returns the topic filter of a shared subscription
// ($share/{group}/{filter}), or filter unchanged if it is not shared. ok is
// false for a malformed shared subscription.
func stripShare(filter string) (string, bool) {
	rest, shared := strings.CutPrefix(filter, "$share/")
	if !shared {
		return filter, true
	}
	group, f, found := strings.Cut(rest, "/")
	if !found || group == "" || f == "" || strings.ContainsAny(group, "+#") {
		return "", false
	}
	return f, true
}
