package cli

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/cpdir"
	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/pki"
	"github.com/hangar-dev/hangar/platform/sealedbox"
)

// runPoolCreate signs a pool's CSR and prints its token: the token alone on
// stdout, notes on stderr.
func runPoolCreate(_ context.Context, e env) error {
	fs := newFlags("pool create", e)
	dir := fs.String("dir", "", "control-plane directory (hangarctl ca init)")
	name := fs.String("name", "", "pool name, also its id: lowercase letters, digits and '-'")
	csrPath := fs.String("csr", "", "the pool's certificate signing request (hangarctl keygen or openssl req)")
	broker := fs.String("broker", "", "broker address the pool connects to, mqtts://HOST:PORT")
	if err := parseFlags(fs, e, 0); err != nil {
		return err
	}
	if *dir == "" || *name == "" || *csrPath == "" || *broker == "" {
		return fmt.Errorf("%w: --dir, --name, --csr and --broker are required", errUsage)
	}
	csr, err := os.ReadFile(*csrPath)
	if err != nil {
		return fmt.Errorf("read CSR: %w", err)
	}
	d, err := cpdir.Open(*dir)
	if err != nil {
		return err
	}
	p, token, err := d.CreatePool(*name, csr, *broker)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, token)
	notAfter := ""
	if cert, err := pki.ParseCertPEM(p.CertificatePEM); err == nil {
		notAfter = ", certificate valid until " + cert.NotAfter.UTC().Format(time.DateOnly)
	}
	fmt.Fprintf(e.stderr, "pool %s created (broker %s%s)\n", p.Name, p.Broker, notAfter)
	fmt.Fprintf(e.stderr, "the line on stdout is the pool token: start the pool's gateway with HANGAR_TOKEN=<token> and HANGAR_POOL_PRIVATE_KEY=$(base64 -w0 pool.key)\n")
	return nil
}

// runPoolToken prints a pool's token again.
func runPoolToken(_ context.Context, e env) error {
	fs := newFlags("pool token", e)
	dir := fs.String("dir", "", "control-plane directory (hangarctl ca init)")
	name := fs.String("name", "", "pool name")
	if err := parseFlags(fs, e, 0); err != nil {
		return err
	}
	if *dir == "" || *name == "" {
		return fmt.Errorf("%w: --dir and --name are required", errUsage)
	}
	d, err := cpdir.Open(*dir)
	if err != nil {
		return err
	}
	token, err := d.Token(*name)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, token)
	return nil
}

// runPoolList lists the pools of a control-plane directory.
func runPoolList(_ context.Context, e env) error {
	fs := newFlags("pool list", e)
	dir := fs.String("dir", "", "control-plane directory (hangarctl ca init)")
	if err := parseFlags(fs, e, 0); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("%w: --dir is required", errUsage)
	}
	d, err := cpdir.Open(*dir)
	if err != nil {
		return err
	}
	pools, err := d.Pools()
	if err != nil {
		return err
	}
	if len(pools) == 0 {
		fmt.Fprintf(e.stderr, "no pools in %s (create one with hangarctl pool create)\n", d.Path())
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tBROKER\tCREATED\tKEY FINGERPRINT (SHA-256)")
	for _, p := range pools {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, p.Broker, p.CreatedAt.UTC().Format(time.RFC3339), sealedbox.PublicKeyFingerprint(p.PublicKey))
	}
	return tw.Flush()
}
