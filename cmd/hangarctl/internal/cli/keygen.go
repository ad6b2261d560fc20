package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/pki"
	"github.com/hangar-dev/hangar/platform/atomicfile"
)

// keygenBits is the size of the pool keys hangarctl keygen makes.
const keygenBits = 4096

// runKeygen makes a pool's RSA-4096 private key (PKCS#8 PEM, 0600) and a CSR for
// it: the equivalent of `openssl req -new -newkey rsa:4096 -nodes`.
func runKeygen(_ context.Context, e env) error {
	fs := newFlags("keygen", e)
	keyPath := fs.String("key", "pool.key", "where to write the private key (PKCS#8 PEM, mode 0600)")
	csrPath := fs.String("csr", "pool.csr", "where to write the certificate signing request")
	cn := fs.String("cn", "hangar-pool", "CN of the CSR (informative: the control plane sets the certificate's CN to the pool id)")
	force := fs.Bool("force", false, "overwrite existing files")
	if err := parseFlags(fs, e, 0); err != nil {
		return err
	}
	if *keyPath == "" || *csrPath == "" {
		return fmt.Errorf("%w: --key and --csr must not be empty", errUsage)
	}
	if filepath.Clean(*keyPath) == filepath.Clean(*csrPath) {
		return fmt.Errorf("%w: --key and --csr are the same file", errUsage)
	}
	if !*force {
		for _, p := range []string{*keyPath, *csrPath} {
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("%s already exists (use --force to overwrite it)", p)
			}
		}
	}
	key, err := pki.NewRSAKey(keygenBits)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	csr, err := pki.CreateCSR(key, *cn)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	defer clear(keyPEM)
	if err := keygenWrite(*keyPath, keyPEM, 0o600, *force); err != nil {
		return err
	}
	if err := keygenWrite(*csrPath, csr, 0o644, *force); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s (RSA-%d private key, PKCS#8 PEM, mode 0600: keep it on the pool's hosts only)\n", *keyPath, keygenBits)
	fmt.Fprintf(e.stdout, "wrote %s (certificate signing request: give it to the control plane)\n", *csrPath)
	fmt.Fprintln(e.stdout)
	fmt.Fprintln(e.stdout, "next steps:")
	fmt.Fprintf(e.stdout, "  1. on the control plane, create the pool; it prints the pool token (HANGAR_TOKEN):\n")
	fmt.Fprintf(e.stdout, "       hangarctl pool create --dir DIR --name NAME --csr %s --broker mqtts://HOST:PORT\n", *csrPath)
	fmt.Fprintf(e.stdout, "  2. start the pool's gateway with the token and the key:\n")
	fmt.Fprintf(e.stdout, "       HANGAR_TOKEN=<token> HANGAR_POOL_PRIVATE_KEY=$(base64 -w0 %s)\n", *keyPath)
	return nil
}

// keygenWrite writes data to path with perm, atomically. Without force it fails
// if path exists, even if it appeared since the check.
func keygenWrite(path string, data []byte, perm os.FileMode, force bool) error {
	if force {
		if err := atomicfile.Write(path, data, perm); err != nil {
			return fmt.Errorf("keygen: %w", err)
		}
		return nil
	}
	if err := atomicfile.Create(path, data, perm); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists (use --force to overwrite it)", path)
		}
		return fmt.Errorf("keygen: %w", err)
	}
	return nil
}
