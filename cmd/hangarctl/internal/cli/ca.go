package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/cpdir"
)

// brokerHostsFlag is a repeatable --broker-host flag.
type brokerHostsFlag []string

// String implements flag.Value.
func (b *brokerHostsFlag) String() string { return strings.Join(*b, ",") }

// Set implements flag.Value; a value may also be a comma-separated list.
func (b *brokerHostsFlag) Set(v string) error {
	for _, h := range strings.Split(v, ",") {
		if h = strings.TrimSpace(h); h == "" {
			return fmt.Errorf("empty host name")
		}
		*b = append(*b, h)
	}
	return nil
}

// runCAInit creates a control-plane directory: CA, broker and control-plane
// certificates, run-signing key.
func runCAInit(_ context.Context, e env) error {
	fs := newFlags("ca init", e)
	dir := fs.String("dir", "", "control-plane directory to create (must not exist or be empty)")
	var hosts brokerHostsFlag
	fs.Var(&hosts, "broker-host", "host name or IP address pools use to reach the broker; repeatable (default "+strings.Join(cpdir.DefaultBrokerHosts(), ",")+"; localhost, 127.0.0.1 and ::1 are always included)")
	if err := parseFlags(fs, e, 0); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("%w: --dir is required", errUsage)
	}
	d, err := cpdir.Init(*dir, hosts)
	if err != nil {
		return err
	}
	if len(hosts) == 0 {
		hosts = cpdir.DefaultBrokerHosts()
	}
	fmt.Fprintf(e.stdout, "initialized control-plane directory %s\n", d.Path())
	fmt.Fprintf(e.stdout, "  CA certificate:       %s\n", d.CAFile())
	fmt.Fprintf(e.stdout, "  broker certificate:   %s (for %s, localhost, 127.0.0.1, ::1)\n", d.BrokerCertFile(), strings.Join(hosts, ", "))
	fmt.Fprintf(e.stdout, "  broker key:           %s\n", d.BrokerKeyFile())
	fmt.Fprintf(e.stdout, "  control-plane client: %s (CN %s)\n", d.ClientCertFile(), cpdir.ControlPlaneCN)
	fmt.Fprintf(e.stdout, "  run-signing key:      %s\n", filepath.Join(d.Path(), cpdir.SigningKeyFile))
	fmt.Fprintln(e.stdout)
	fmt.Fprintf(e.stdout, "next: hangarctl pool create --dir %s --name NAME --csr pool.csr --broker mqtts://HOST:PORT\n", d.Path())
	return nil
}
