package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/pki"
	"github.com/hangar-dev/hangar/platform/atomicfile"
	"github.com/hangar-dev/hangar/platform/dial"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
)

// poolNameFile, in a pool TLS directory, names the pool its CA is for.
const poolNameFile = "pool"

// runPKIInit creates the pool-internal CA (ADR 0008).
func runPKIInit(_ context.Context, e env) error {
	fs := newFlags("pki init", e)
	dir := fs.String("dir", "", "pool TLS directory to create (ca.crt, ca.key, and the certificates issued later)")
	pool := fs.String("pool", "", "pool name (as in hangarctl pool create)")
	if err := parseFlags(fs, e, 0); err != nil {
		return err
	}
	if *dir == "" || *pool == "" {
		return fmt.Errorf("%w: --dir and --pool are required", errUsage)
	}
	if err := (tlsconfig.Identity{Pool: *pool, Role: tlsconfig.RoleGateway, ID: "x"}).Validate(); err != nil {
		return fmt.Errorf("%w: --pool: %v", errUsage, err)
	}
	d := pki.PoolTLSDir(*dir)
	if _, created, err := d.InitPoolCA(*pool); err != nil {
		return err
	} else if !created {
		return fmt.Errorf("%s already holds a pool CA", *dir)
	}
	if err := atomicfile.Write(filepath.Join(*dir, poolNameFile), []byte(*pool+"\n"), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "pool-internal CA of pool %s: %s (its key %s stays here)\n", *pool, d.CAFile(), d.KeyFile("ca"))
	fmt.Fprintf(e.stdout, "next: hangarctl pki issue --dir %s --role gateway|policy|logship|executor|operator [--id ID]\n", *dir)
	return nil
}

// runPKIIssue issues one certificate of the pool-internal CA.
func runPKIIssue(_ context.Context, e env) error {
	fs := newFlags("pki issue", e)
	dir := fs.String("dir", "", "pool TLS directory (hangarctl pki init)")
	role := fs.String("role", "", "gateway, policy, logship, executor or operator")
	id := fs.String("id", "", "the identity's id (default: the role's name; required for executor and operator; \"enroll\" makes an enrollment CA for replicas)")
	var hosts brokerHostsFlag
	fs.Var(&hosts, "host", "extra DNS name or IP address in the certificate; repeatable (Hangar checks identities, not host names)")
	if err := parseFlags(fs, e, 0); err != nil {
		return err
	}
	if *dir == "" || *role == "" {
		return fmt.Errorf("%w: --dir and --role are required", errUsage)
	}
	r := tlsconfig.Role(*role)
	if !r.Valid() {
		return fmt.Errorf("%w: --role %q is not one of gateway, policy, logship, executor, operator", errUsage, *role)
	}
	if *id == "" {
		if r == tlsconfig.RoleExecutor || r == tlsconfig.RoleOperator {
			return fmt.Errorf("%w: --id is required for role %s", errUsage, r)
		}
		*id = *role
	}
	d := pki.PoolTLSDir(*dir)
	poolName, err := os.ReadFile(filepath.Join(*dir, poolNameFile))
	if err != nil {
		return fmt.Errorf("%s is not a pool TLS directory (hangarctl pki init): %w", *dir, err)
	}
	ca, _, err := d.InitPoolCA(strings.TrimSpace(string(poolName)))
	if err != nil {
		return err
	}
	ident := tlsconfig.Identity{Pool: strings.TrimSpace(string(poolName)), Role: r, ID: *id}
	wrote, err := d.Issue(ca, ident, append([]string{*role, "localhost", "127.0.0.1"}, hosts...))
	if err != nil {
		return err
	}
	name := pki.FileName(ident)
	if !wrote {
		return fmt.Errorf("%s exists: remove it to issue a new one", d.CertFile(name))
	}
	fmt.Fprintf(e.stdout, "%s: %s, key %s (CA %s)\n", ident, d.CertFile(name), d.KeyFile(name), d.CAFile())
	return nil
}

// operatorTLS are the flags of a command that calls logship as an operator.
type operatorTLS struct {
	ca, cert, key *string
	insecure      *bool
}

func addOperatorTLS(fs *flag.FlagSet) operatorTLS {
	return operatorTLS{
		ca:       fs.String("tls-ca", os.Getenv("HANGAR_TLS_CA"), "pool CA for logship (default $HANGAR_TLS_CA)"),
		cert:     fs.String("tls-cert", os.Getenv("HANGAR_TLS_CERT"), "operator certificate (hangarctl pki issue --role operator; default $HANGAR_TLS_CERT)"),
		key:      fs.String("tls-key", os.Getenv("HANGAR_TLS_KEY"), "its key (default $HANGAR_TLS_KEY)"),
		insecure: fs.Bool("insecure-plaintext", false, "follow a plaintext logship that is not on loopback"),
	}
}

// security returns how to reach logship at addr: mutual TLS with the
// operator certificate, or plaintext for a loopback logship without
// certificates or with --insecure-plaintext (dial.Dial enforces the same
// rule; checking it here names the flags before anything is submitted).
func (o operatorTLS) security(addr string) (dial.Security, error) {
	p, err := tlsconfig.LoadPoolFiles(*o.ca, *o.cert, *o.key, tlsconfig.RoleOperator)
	if err != nil {
		return dial.Security{}, fmt.Errorf("--tls-ca, --tls-cert, --tls-key: %w", err)
	}
	if p != nil {
		return dial.Security{TLS: p.ClientConfig(tlsconfig.RoleLogship)}, nil
	}
	if err := dial.CheckPlaintext(addr, *o.insecure); err != nil {
		return dial.Security{}, errors.New("--logship " + addr + ": give an operator certificate (--tls-ca, --tls-cert, --tls-key) or --insecure-plaintext")
	}
	return dial.Security{InsecurePlaintext: *o.insecure}, nil
}
