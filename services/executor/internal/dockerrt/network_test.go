package dockerrt

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// hostListener accepts TCP connections on addr and answers each with marker.
func hostListener(t *testing.T, addr, marker string) int {
	t.Helper()
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, marker)
			c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// listenerContainer starts a container on network that answers every TCP
// connection on port 8080 with marker, waits until the host reads the
// marker from it, and returns its address.
func listenerContainer(t *testing.T, cli *client.Client, network, marker string) netip.Addr {
	t.Helper()
	ctx := context.Background()
	res, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:       uniqueID("hangar-test-listener"),
		Config:     &container.Config{Image: testImage, Entrypoint: []string{}, Cmd: []string{"nc", "-ll", "-p", "8080", "-e", "echo", marker}},
		HostConfig: &container.HostConfig{NetworkMode: container.NetworkMode(network)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = cli.ContainerRemove(context.Background(), res.ID, client.ContainerRemoveOptions{Force: true})
	})
	if _, err := cli.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	in, err := cli.ContainerInspect(ctx, res.ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ep := in.Container.NetworkSettings.Networks[network]
	if ep == nil || !ep.IPAddress.IsValid() {
		t.Fatalf("listener container has no address on %s", network)
	}
	// The host reaches containers on a bridge: this proves the listener
	// answers, so that a run not reaching it says something.
	addr := net.JoinHostPort(ep.IPAddress.String(), "8080")
	for i := 0; ; i++ {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.TrimSpace(line) == marker {
				return ep.IPAddress
			}
		}
		if i == 100 {
			t.Fatalf("listener container on %s does not answer at %s", network, addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runNetwork creates a run network like the executor's default one (under a
// unique name and bridge) through EnsureNetwork, and removes it at the end.
func runNetwork(t *testing.T, cli *client.Client) (*Runtime, string, string) {
	t.Helper()
	id := uniqueID("hr")                      // "hr-xxxxxxxx"
	bridge := strings.ReplaceAll(id, "-", "") // 10 characters
	name := "hangar-runs-test-" + id
	rt := newRuntime(t, cli, Options{Network: name, CreateNetwork: &NetworkSpec{Bridge: bridge}})
	t.Cleanup(func() {
		rt.Close() // its idle network holder is on the network
		if _, err := cli.NetworkRemove(context.Background(), name, client.NetworkRemoveOptions{}); err != nil {
			t.Errorf("remove run network: %v", err)
		}
	})
	if err := rt.EnsureNetwork(context.Background()); err != nil {
		t.Fatal(err)
	}
	return rt, name, bridge
}

// probe is a phase that tries to connect to each target and prints
// "<name>: <what it read, or nc's error>"; "self" is a control: a listener in
// the run's own container, which must answer.
func probe(targets ...[3]string) *testJob {
	script := []string{
		`try() { echo "$1: $(nc -w 3 "$2" "$3" </dev/null 2>&1)"; }`,
		`nc -ll -p 9000 -e echo self-answers & i=0; until [ "$(nc -w 1 127.0.0.1 9000 </dev/null)" = self-answers ] || [ $i -ge 50 ]; do i=$((i+1)); sleep 0.1; done; try self 127.0.0.1 9000`,
	}
	for _, tg := range targets {
		script = append(script, fmt.Sprintf("try %s %s %s", tg[0], tg[1], tg[2]))
	}
	return newJob(phase("plan", script...))
}

func probeResult(out, name string) string {
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, name+": "); ok {
			return v
		}
	}
	return ""
}

// TestRunNetworkIsolation: on the executor's own run network, a run cannot
// reach a host listener bound to loopback, another run's container on the
// same network (inter-container communication is off), or a service
// container on another network (the compose stack's gateway and logship).
// What it does not guarantee: a host listener on 0.0.0.0 is reached through
// the bridge's gateway address unless the host's firewall drops it (see
// TestRunNetworkFirewallRule); the test only reports it.
func TestRunNetworkIsolation(t *testing.T) {
	t.Parallel()
	cli := engine(t)
	ctx := context.Background()
	rt, name, bridge := runNetwork(t, cli)
	// The run joins a network holder's namespace, as runs on the run network do.
	if err := rt.Warm(ctx); err != nil {
		t.Fatal(err)
	}

	nw, err := cli.NetworkInspect(ctx, name, client.NetworkInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if nw.Network.Driver != "bridge" || nw.Network.Options[bridgeICC] != "false" || nw.Network.Options[bridgeName] != bridge ||
		nw.Network.Labels[LabelManaged] != "true" {
		t.Fatalf("run network: driver %q, options %v, labels %v", nw.Network.Driver, nw.Network.Options, nw.Network.Labels)
	}
	var gateway string
	for _, c := range nw.Network.IPAM.Config {
		if c.Gateway.Is4() {
			gateway = c.Gateway.String()
		}
	}
	if gateway == "" {
		t.Fatalf("run network has no IPv4 gateway: %+v", nw.Network.IPAM.Config)
	}

	suffix := uniqueID("m")
	loopPort := hostListener(t, "127.0.0.1:0", "host-loopback-"+suffix)
	anyPort := hostListener(t, "0.0.0.0:0", "host-any-"+suffix)
	peer := listenerContainer(t, cli, name, "peer-run-"+suffix)
	svcNet := uniqueID("hangar-test-services")
	if _, err := cli.NetworkCreate(ctx, svcNet, client.NetworkCreateOptions{Driver: "bridge"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = cli.NetworkRemove(context.Background(), svcNet, client.NetworkRemoveOptions{}) })
	svc := listenerContainer(t, cli, svcNet, "service-"+suffix)

	tj := probe(
		[3]string{"loopback-via-gateway", gateway, strconv.Itoa(loopPort)},
		[3]string{"loopback", "127.0.0.1", strconv.Itoa(loopPort)},
		[3]string{"peer-run", peer.String(), "8080"},
		[3]string{"service", svc.String(), "8080"},
		[3]string{"any-via-gateway", gateway, strconv.Itoa(anyPort)},
	)
	wantFinished(t, runJob(t, rt, tj), tj)
	out := tj.stdout.String()
	if got := probeResult(out, "self"); got != "self-answers" {
		t.Fatalf("control: the run could not reach its own listener (%q): the probe is broken\n%s", got, out)
	}
	for _, target := range []struct{ name, marker string }{
		{"loopback-via-gateway", "host-loopback-"},
		{"loopback", "host-loopback-"},
		{"peer-run", "peer-run-"},
		{"service", "service-"},
	} {
		got := probeResult(out, target.name)
		if strings.Contains(got, target.marker+suffix) || !strings.Contains(got, "nc:") {
			t.Errorf("%s: the run reached it or the probe did not run (%q)", target.name, got)
		}
	}
	t.Logf("host listener on 0.0.0.0 through the run network's gateway: %q (Hangar does not guarantee this one: the host firewall rule does)",
		probeResult(out, "any-via-gateway"))
}

// TestRunNetworkFirewallRule checks the host firewall rule that
// docs/RUN-ISOLATION.md tells operators to add for the run network's bridge:
// with it, a run no longer reaches a host listener on 0.0.0.0, through the
// bridge's gateway or the host's other addresses. It changes the host's
// firewall for its own bridge only, and needs root and iptables.
func TestRunNetworkFirewallRule(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to add the documented iptables rule")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("needs iptables to add the documented rule (apt-get install iptables)")
	}
	t.Parallel()
	cli := engine(t)
	rt, name, bridge := runNetwork(t, cli)
	nw, err := cli.NetworkInspect(context.Background(), name, client.NetworkInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var gateway string
	for _, c := range nw.Network.IPAM.Config {
		if c.Gateway.Is4() {
			gateway = c.Gateway.String()
		}
	}
	rule := []string{"INPUT", "-i", bridge, "-j", "REJECT"}
	if b, err := exec.Command("iptables", append([]string{"-I"}, rule...)...).CombinedOutput(); err != nil {
		t.Skipf("cannot add an iptables rule here: %v: %s", err, b)
	}
	t.Cleanup(func() {
		if b, err := exec.Command("iptables", append([]string{"-D"}, rule...)...).CombinedOutput(); err != nil {
			t.Errorf("remove the test's iptables rule: %v: %s", err, b)
		}
	})
	suffix := uniqueID("m")
	anyPort := strconv.Itoa(hostListener(t, "0.0.0.0:0", "host-any-"+suffix))
	targets := [][3]string{{"any-via-gateway", gateway, anyPort}}
	if ip := hostAddress(t); ip != "" {
		targets = append(targets, [3]string{"any-via-host-address", ip, anyPort})
	}
	tj := probe(targets...)
	wantFinished(t, runJob(t, rt, tj), tj)
	out := tj.stdout.String()
	if got := probeResult(out, "self"); got != "self-answers" {
		t.Fatalf("control: the run could not reach its own listener (%q)\n%s", got, out)
	}
	for _, tg := range targets {
		if got := probeResult(out, tg[0]); strings.Contains(got, suffix) || !strings.Contains(got, "nc:") {
			t.Errorf("%s: reached through the firewall rule or not probed (%q)", tg[0], got)
		}
	}
}

// hostAddress returns a non-loopback IPv4 address of this host outside the
// engine's bridges, or "".
func hostAddress(t *testing.T) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 || i.Flags&net.FlagUp == 0 || strings.HasPrefix(i.Name, "docker") ||
			strings.HasPrefix(i.Name, "br-") || strings.HasPrefix(i.Name, "veth") || strings.HasPrefix(i.Name, "hr") {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				return n.IP.String()
			}
		}
	}
	return ""
}

// TestEnsureNetwork: what the run network may be.
func TestEnsureNetwork(t *testing.T) {
	t.Parallel()
	cli := engine(t)
	ctx := context.Background()
	iccOn := uniqueID("hangar-test-icc")
	if _, err := cli.NetworkCreate(ctx, iccOn, client.NetworkCreateOptions{Driver: "bridge"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = cli.NetworkRemove(context.Background(), iccOn, client.NetworkRemoveOptions{}) })
	hostID := ""
	if nw, err := cli.NetworkInspect(ctx, "host", client.NetworkInspectOptions{}); err == nil {
		hostID = nw.Network.ID
	}
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"host by name", Options{Network: "host"}, "not allowed (HANGAR_WORKER_ALLOW_HOST_NETWORK)"},
		{"host allowed", Options{Network: "host", AllowHostNetwork: true}, ""},
		{"none", Options{Network: "none"}, ""},
		{"missing, not ours to create", Options{Network: uniqueID("hangar-test-missing")}, "HANGAR_WORKER_NETWORK"},
		{"a user network with ICC on (warned)", Options{Network: iccOn}, ""},
		{"the default name taken by a network with ICC on", Options{Network: iccOn, CreateNetwork: &NetworkSpec{}}, "was not created by Hangar and lets containers reach each other"},
	}
	if hostID != "" {
		tests = append(tests, struct {
			name    string
			opts    Options
			wantErr string
		}{"host by id", Options{Network: hostID[:12]}, "is the host's network (driver host)"})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rt := newRuntime(t, cli, tc.opts)
			err := rt.EnsureNetwork(ctx)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("EnsureNetwork = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("EnsureNetwork = %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
	if hostID == "" {
		t.Log("the engine has no host network: the by-id case was not tried")
	}
}

// TestRunJoinsANetworkHolder: on a user-defined run network, a run's phases
// join the network namespace of a holder started ahead (one per run, on the
// run network, removed with the run), instead of each setting one up; the
// next run gets another holder.
func TestRunJoinsANetworkHolder(t *testing.T) {
	t.Parallel()
	cli := engine(t)
	ctx := context.Background()
	rt, name, _ := runNetwork(t, cli)
	in := inspectCreated(t, rt, cli)
	var holders []string
	for range 2 {
		if err := rt.Warm(ctx); err != nil {
			t.Fatal(err)
		}
		tj := newJob(phase("init", "ip -o -4 addr show eth0"), phase("plan", "ip -o -4 addr show eth0"))
		wantFinished(t, runJob(t, rt, tj), tj)
		addrs := regexp.MustCompile(`inet (\S+)`).FindAllStringSubmatch(tj.stdout.String(), -1)
		if len(addrs) != 2 || addrs[0][1] != addrs[1][1] {
			t.Errorf("the two phases' addresses: %q, want one, twice", tj.stdout)
		}
		cs := in.containers()[len(holders)*2:]
		h, ok := strings.CutPrefix(string(cs[0].HostConfig.NetworkMode), "container:")
		if !ok || string(cs[1].HostConfig.NetworkMode) != "container:"+h {
			t.Fatalf("NetworkMode %q and %q, want container:<holder> twice", cs[0].HostConfig.NetworkMode, cs[1].HostConfig.NetworkMode)
		}
		holders = append(holders, h)
		// Removed after the run, in the background.
		for i := 0; ; i++ {
			if _, err := cli.ContainerInspect(ctx, h, client.ContainerInspectOptions{}); err != nil {
				break
			}
			if i == 300 {
				t.Fatalf("holder %s still exists 30 s after its run", h)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if holders[0] == holders[1] {
		t.Errorf("two runs joined the same holder %s", holders[0])
	}
	// The holder that waits for the next run is on the run network, with the
	// executor's labels, hardened like a run container.
	if err := rt.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	list, err := cli.ContainerList(ctx, client.ContainerListOptions{Filters: rt.filters()})
	if err != nil || len(list.Items) != 1 || list.Items[0].Labels[LabelHolder] != "true" {
		t.Fatalf("idle holders %+v (%v), want one", list.Items, err)
	}
	res, err := cli.ContainerInspect(ctx, list.Items[0].ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hc := res.Container.HostConfig
	if string(hc.NetworkMode) != name || hc.Privileged || !slices.Equal(hc.CapDrop, []string{"ALL"}) || hc.PidsLimit == nil || *hc.PidsLimit != holderPids ||
		!hc.ReadonlyRootfs || hc.LogConfig.Type != "none" || len(hc.Mounts) != 0 {
		t.Errorf("holder's host config: %+v", hc)
	}
}

// TestReapKeepsHoldersOfKeptRuns: at an executor's start, Reap removes the
// network holders an earlier life left idle, but not the one a re-adopted
// run's container joined (its network would go with it), nor the one this
// life has started for its next run.
func TestReapKeepsHoldersOfKeptRuns(t *testing.T) {
	t.Parallel()
	cli := engine(t)
	ctx := context.Background()
	rt, name, _ := runNetwork(t, cli)
	if err := rt.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	start := func(labels map[string]string, network string) string {
		t.Helper()
		labels[LabelManaged], labels[LabelExecutorID] = "true", rt.opts.ExecutorID
		c, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
			Config:     &container.Config{Image: testImage, Cmd: []string{"sleep", "300"}, Labels: labels},
			HostConfig: &container.HostConfig{NetworkMode: container.NetworkMode(network)},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
			t.Fatal(err)
		}
		return c.ID
	}
	// An earlier life's: the holder of a run it re-adopts, that run's
	// phase, and an idle holder.
	keptRun := uniqueID("run-kept")
	keptHolder := start(map[string]string{LabelHolder: "true"}, name)
	keptPhase := start(map[string]string{LabelRunID: keptRun, LabelPhase: "plan", LabelPhaseIndex: "0"}, "container:"+keptHolder)
	idle := start(map[string]string{LabelHolder: "true"}, name)
	t.Cleanup(func() {
		for _, id := range []string{keptPhase, keptHolder} {
			_ = removeContainer(context.Background(), cli, id)
		}
	})

	if _, err := rt.Reap(ctx, keptRun); err != nil {
		t.Fatal(err)
	}
	list, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: rt.filters()})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, c := range list.Items {
		left = append(left, c.ID)
	}
	rt.hold.mu.Lock()
	own := slices.Clone(rt.hold.idle)
	rt.hold.mu.Unlock()
	for _, id := range append([]string{keptHolder, keptPhase}, own...) {
		if !slices.Contains(left, id) {
			t.Errorf("Reap removed %s (kept run's holder %s, its phase %s, this life's holders %v)", id, keptHolder, keptPhase, own)
		}
	}
	if slices.Contains(left, idle) || len(left) != 2+len(own) {
		t.Errorf("left %v: the earlier life's idle holder %s should be gone", left, idle)
	}
}
