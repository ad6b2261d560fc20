package dockerrt

import (
	"context"
	"fmt"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// DefaultNetwork is the network of run containers unless
// HANGAR_WORKER_NETWORK names another: a bridge network of Hangar's own,
// created by the executor when missing (see EnsureNetwork).
const DefaultNetwork = "hangar-runs"

// DefaultBridge is the host interface of DefaultNetwork, stable so that a
// host firewall rule can name it (docs/RUN-ISOLATION.md).
const DefaultBridge = "hangar-runs0"

// Options of Docker's bridge driver.
const (
	bridgeICC  = "com.docker.network.bridge.enable_icc"
	bridgeName = "com.docker.network.bridge.name"
)

// networkClient manages the run network.
type networkClient interface {
	NetworkInspect(ctx context.Context, id string, opts client.NetworkInspectOptions) (client.NetworkInspectResult, error)
	NetworkCreate(ctx context.Context, name string, opts client.NetworkCreateOptions) (client.NetworkCreateResult, error)
}

// NetworkSpec is how the executor creates a run network that does not exist.
type NetworkSpec struct {
	// Bridge is the host interface's name (at most 15 characters); "" lets
	// the engine choose.
	Bridge string
}

// EnsureNetwork makes the run network ready and checks what it is:
//   - The network named by Options.Network, when it does not exist and
//     Options.CreateNetwork is set, is created as a bridge network with
//     inter-container communication off (runs cannot reach each other) and
//     the labels hangar.managed=true; a network the executor did not create
//     must exist.
//   - A network whose driver is "host" (by name or by id) needs
//     Options.AllowHostNetwork; "none" is accepted.
//   - A bridge network with inter-container communication on is refused when
//     it is the default network (someone created it by hand), and reported
//     in the log otherwise (runs on it can reach each other and every
//     container on it).
//
// The executor calls it at start, and each run's Prepare calls it again:
// the network may have been removed since.
func (r *Runtime) EnsureNetwork(ctx context.Context) error {
	name := r.opts.Network
	switch name {
	case "none":
		return nil
	case "host":
		if !r.opts.AllowHostNetwork {
			return fmt.Errorf("run network %q is the host's network: not allowed (HANGAR_WORKER_ALLOW_HOST_NETWORK)", name)
		}
		return nil
	}
	res, err := r.cli.NetworkInspect(ctx, name, client.NetworkInspectOptions{})
	if cerrdefs.IsNotFound(err) && r.opts.CreateNetwork != nil {
		cerr := r.createNetwork(ctx, name, *r.opts.CreateNetwork)
		res, err = r.cli.NetworkInspect(ctx, name, client.NetworkInspectOptions{})
		if err != nil && cerr != nil {
			return cerr
		}
	}
	if err != nil {
		return fmt.Errorf("run network %q (HANGAR_WORKER_NETWORK): %w", name, err)
	}
	nw := res.Network
	switch {
	case nw.Driver == "host" && !r.opts.AllowHostNetwork:
		return fmt.Errorf("run network %q is the host's network (driver host): not allowed without HANGAR_WORKER_ALLOW_HOST_NETWORK=true", name)
	case nw.Driver == "bridge" && nw.Options[bridgeICC] != "false":
		if r.opts.CreateNetwork != nil && nw.Labels[LabelManaged] != "true" {
			return fmt.Errorf("run network %q exists but was not created by Hangar and lets containers reach each other "+
				"(no %s=false): remove it, or create it with -o %s=false", name, bridgeICC, bridgeICC)
		}
		r.log.Warn("run containers can reach each other and every container on their network (inter-container communication is on)",
			"network", name)
	}
	return nil
}

func (r *Runtime) createNetwork(ctx context.Context, name string, spec NetworkSpec) error {
	opts := map[string]string{bridgeICC: "false"}
	if spec.Bridge != "" {
		opts[bridgeName] = spec.Bridge
	}
	_, err := r.cli.NetworkCreate(ctx, name, client.NetworkCreateOptions{
		Driver:  "bridge",
		Options: opts,
		Labels:  map[string]string{LabelManaged: "true"},
	})
	if err != nil {
		// Another executor on this host may have created it meanwhile: the
		// caller looks again.
		return fmt.Errorf("create run network %q: %w", name, err)
	}
	r.log.Info("created the run network", "network", name, "bridge", spec.Bridge)
	return nil
}
