package cli

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/cpdir"
	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/pki"
	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/s3server"
	"github.com/hangar-dev/hangar/platform/atomicfile"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
)

// runSetup is the one-shot set-up step of a deployment (docker compose, a
// Kubernetes Job): it does what an operator does by hand — a control-plane CA,
// the pool's key and CSR, the pool and its token — and writes the files the
// gateway reads with HANGAR_TOKEN_FILE and HANGAR_POOL_PRIVATE_KEY_FILE. It
// also makes the pool-internal PKI (ADR 0008): DIR/tls/ca holds the pool CA
// and its key, and DIR/tls/<service> what each service mounts (ca.crt and its
// certificate and key; the executors' is an enrollment CA, the operator's is
// operator "admin"). It is idempotent: what exists is kept, so restarting the
// stack keeps its identity.
func runSetup(_ context.Context, e env) error {
	fs := newFlags("setup", e)
	dir := fs.String("dir", "", "state directory (the control plane in DIR/control-plane, the pool's files in DIR/pool)")
	pool := fs.String("pool", "default", "pool name")
	broker := fs.String("broker", "", "broker address the pool connects to, mqtts://HOST:PORT")
	hosts := fs.String("broker-host", "", "extra names/IPs of the broker's certificate, comma-separated")
	owner := fs.Int("owner", -1, "give the written files to this uid (the services' non-root user), keeping them private")
	if err := parseFlags(fs, e, 0); err != nil {
		return err
	}
	if *dir == "" || *broker == "" {
		return fmt.Errorf("%w: --dir and --broker are required", errUsage)
	}
	cpPath := filepath.Join(*dir, "control-plane")
	poolDir := filepath.Join(*dir, "pool")
	if err := os.MkdirAll(poolDir, 0o755); err != nil {
		return err
	}
	if err := setupPoolTLS(filepath.Join(*dir, "tls"), *pool, e); err != nil {
		return fmt.Errorf("pool TLS: %w", err)
	}
	defer func() {
		if *owner >= 0 {
			_ = chownTree(*dir, *owner)
		}
	}()
	d, err := cpdir.Open(cpPath)
	if errors.Is(err, cpdir.ErrNotInitialized) {
		names := cpdir.DefaultBrokerHosts()
		for _, h := range strings.Split(*hosts, ",") {
			if h = strings.TrimSpace(h); h != "" {
				names = append(names, h)
			}
		}
		d, err = cpdir.Init(cpPath, names)
		if err == nil {
			fmt.Fprintf(e.stdout, "created the control plane's CA in %s\n", cpPath)
		}
	}
	if err != nil {
		return err
	}

	keyFile, keyB64File, tokenFile := filepath.Join(poolDir, "pool.key"), filepath.Join(poolDir, "pool.key.b64"), filepath.Join(poolDir, "token")
	if _, err := os.Stat(tokenFile); err == nil {
		fmt.Fprintf(e.stdout, "pool %s already set up (%s)\n", *pool, tokenFile)
		return nil
	}
	key, err := pki.NewRSAKey(keygenBits)
	if err != nil {
		return err
	}
	if err := pki.WriteKeyPEM(keyFile, key); err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	csr, err := pki.CreateCSR(key, *pool)
	if err != nil {
		return err
	}
	if _, err := d.Pool(*pool); errors.Is(err, cpdir.ErrPoolNotFound) {
		if _, _, err := d.CreatePool(*pool, csr, *broker); err != nil {
			return err
		}
	} else if err != nil {
		return err
	} else {
		return fmt.Errorf("pool %s exists in %s but its token file %s is missing: remove the pool record or restore the file", *pool, cpPath, tokenFile)
	}
	token, err := d.Token(*pool)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(keyB64File, []byte(base64.StdEncoding.EncodeToString(keyPEM)), 0o600); err != nil {
		return err
	}
	if err := atomicfile.Write(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		return err
	}
	if *owner >= 0 {
		if err := chownTree(*dir, *owner); err != nil {
			return fmt.Errorf("--owner %d: %w", *owner, err)
		}
	}
	fmt.Fprintf(e.stdout, "pool %s created; token in %s, key in %s\n", *pool, tokenFile, keyB64File)
	return nil
}

// chownTree gives every file under dir to uid (the services' non-root
// user): the files stay private (0600) but become theirs.
func chownTree(dir string, uid int) error {
	return filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, uid)
	})
}

// setupServices are the pool TLS directories setup fills, and the identity
// each holds.
var setupServices = []struct {
	dir  string
	role tlsconfig.Role
	id   string
}{
	{"gateway", tlsconfig.RoleGateway, "gateway"},
	{"policy", tlsconfig.RolePolicy, "policy"},
	{"logship", tlsconfig.RoleLogship, "logship"},
	{"executor", tlsconfig.RoleExecutor, tlsconfig.EnrollmentID},
	{"operator", tlsconfig.RoleOperator, "admin"},
}

// setupPoolTLS makes the pool CA in dir/ca (kept if there) and each
// service's directory dir/<service> with ca.crt and its certificate.
func setupPoolTLS(dir, pool string, e env) error {
	ca, created, err := pki.PoolTLSDir(filepath.Join(dir, "ca")).InitPoolCA(pool)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(e.stdout, "created the pool-internal CA in %s\n", filepath.Join(dir, "ca"))
	}
	for _, s := range setupServices {
		d := pki.PoolTLSDir(filepath.Join(dir, s.dir))
		if err := os.MkdirAll(string(d), 0o755); err != nil {
			return err
		}
		if err := atomicfile.Write(d.CAFile(), ca.CertPEM, 0o644); err != nil {
			return err
		}
		id := tlsconfig.Identity{Pool: pool, Role: s.role, ID: s.id}
		wrote, err := d.Issue(ca, id, []string{s.dir, "hangar-" + s.dir, "localhost", "127.0.0.1"})
		if err != nil {
			return err
		}
		if wrote {
			fmt.Fprintf(e.stdout, "issued %s in %s\n", id, string(d))
		}
	}
	return nil
}

// runS3 serves the S3-compatible server of the dev stack as a process, for a
// compose stack that has no S3 of its own. Credentials come from
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
func runS3(ctx context.Context, e env) error {
	fs := newFlags("s3", e)
	listen := fs.String("listen", "127.0.0.1:9000", "listen address")
	dir := fs.String("dir", "", "keep objects under this directory (default: in memory)")
	bucket := fs.String("bucket", "hangar-logs", "bucket to create, comma-separated for several")
	if err := parseFlags(fs, e, 0); err != nil {
		return err
	}
	ak, sk := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	if ak == "" || sk == "" {
		return errors.New("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: required (the only credentials the server accepts)")
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := s3server.Start(ctx, s3server.Config{Addr: *listen, AccessKey: ak, SecretKey: sk, Buckets: strings.Split(*bucket, ","), Dir: *dir})
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Fprintf(e.stdout, "S3-compatible server listening on %s\n", srv.Endpoint())
	<-ctx.Done()
	return nil
}
