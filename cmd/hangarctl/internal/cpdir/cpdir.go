// Package cpdir manages the control plane's directory: what `hangarctl --dir DIR`
// points at. It holds the control plane's CA, the broker's and the control
// plane's own TLS identities, the run-signing key, and one record per pool.
//
// Layout (the directory is mode 0700, private keys 0600, the rest 0644):
//
//	DIR/
//	  ca.crt               CA certificate (ECDSA P-256): signs everything below; the
//	                       "broker_ca_pem" of every pool token
//	  ca.key               CA private key, PKCS#8 PEM
//	  broker.crt           broker's TLS server certificate (ECDSA P-256); SANs:
//	                       localhost, 127.0.0.1, ::1 and the --broker-host values
//	  broker.key           its private key, PKCS#8 PEM
//	  control-plane.crt    control plane's TLS client certificate for the broker,
//	                       CN "hangar-control-plane"
//	  control-plane.key    its private key, PKCS#8 PEM
//	  signing.key          Ed25519 run-signing key, PKCS#8 PEM: signs run
//	                       envelopes and commands
//	  signing.pub          its public key, PKIX PEM: "run_verification_key" of tokens
//	  pools/               0700
//	    <name>.json        {"name","id","broker","certificate_pem","public_key_pem",
//	                       "created_at"}: one pool; the token is rebuilt from it
//
// A pool's id is its name. Pool names match ^[a-z0-9][a-z0-9-]{0,62}$ and do not
// start with "hangar-" (reserved for the control plane's own identities, such as
// the "hangar-control-plane" client certificate, since the broker's ACLs go by CN).
package cpdir

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/pki"
	"github.com/hangar-dev/hangar/platform/atomicfile"
	"github.com/hangar-dev/hangar/platform/pooltoken"
)

// File names inside the directory.
const (
	CACertFile           = "ca.crt"
	CAKeyFile            = "ca.key"
	BrokerCertFileName   = "broker.crt"
	BrokerKeyFileName    = "broker.key"
	ControlPlaneCertFile = "control-plane.crt"
	ControlPlaneKeyFile  = "control-plane.key"
	SigningKeyFile       = "signing.key"
	SigningPubFile       = "signing.pub"
	PoolsDir             = "pools"
)

// ControlPlaneCN is the CN of the control plane's broker client certificate.
const ControlPlaneCN = "hangar-control-plane"

// defaultBrokerHosts are the broker certificate's names when none are given
// (127.0.0.1, ::1 and localhost are always included anyway).
var defaultBrokerHosts = []string{"localhost", "127.0.0.1"}

// DefaultBrokerHosts returns the broker host names Init uses when given none.
func DefaultBrokerHosts() []string { return append([]string(nil), defaultBrokerHosts...) }

// poolNameChars says whether name is 1-63 lowercase letters, digits and
// '-', starting with a letter or digit. Checked by hand, not by a regular
// expression compiled at every hangarctl start.
func poolNameChars(name string) bool {
	if len(name) == 0 || len(name) > 63 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || i > 0 && c == '-') {
			return false
		}
	}
	return true
}

// ValidPoolName returns nil if name can name a pool, else an error wrapping
// ErrInvalidPoolName that says why.
func ValidPoolName(name string) error {
	if !poolNameChars(name) {
		return fmt.Errorf("%w %q: use 1-63 lowercase letters, digits and '-', starting with a letter or digit", ErrInvalidPoolName, name)
	}
	if strings.HasPrefix(name, "hangar-") {
		return fmt.Errorf("%w %q: names starting with \"hangar-\" are reserved", ErrInvalidPoolName, name)
	}
	return nil
}

// validHost checks a broker host name or IP address for the certificate.
func validHost(h string) error {
	if strings.Contains(h, ":") {
		if net.ParseIP(h) == nil {
			return fmt.Errorf("invalid broker host %q: a host name or IP address, without port", h)
		}
		return nil
	}
	if h == "" || len(h) > 253 || strings.ContainsAny(h, " \t/@,[]*?") {
		return fmt.Errorf("invalid broker host %q: a host name or IP address, without port", h)
	}
	return nil
}

// Dir is an opened control-plane directory.
type Dir struct {
	path      string
	ca        *pki.CA
	verifyKey ed25519.PublicKey
}

// Pool is one pool of the control plane.
type Pool struct {
	Name      string
	ID        string
	Broker    string
	PublicKey *rsa.PublicKey
	// CertificatePEM is the pool's client certificate.
	CertificatePEM []byte
	CreatedAt      time.Time
}

// poolRecord is the JSON form of a pool, pools/<name>.json.
type poolRecord struct {
	Name           string    `json:"name"`
	ID             string    `json:"id"`
	Broker         string    `json:"broker"`
	CertificatePEM string    `json:"certificate_pem"`
	PublicKeyPEM   string    `json:"public_key_pem"`
	CreatedAt      time.Time `json:"created_at"`
}

// Init creates a control-plane directory at path: a new CA, broker certificate
// for brokerHosts (DefaultBrokerHosts if empty), control-plane client
// certificate and run-signing key. path may not exist yet or be an empty
// directory; Init refuses a directory that already holds any of its files.
func Init(path string, brokerHosts []string) (*Dir, error) {
	if path == "" {
		return nil, fmt.Errorf("init control-plane directory: empty path")
	}
	if len(brokerHosts) == 0 {
		brokerHosts = DefaultBrokerHosts()
	}
	for _, h := range brokerHosts {
		if err := validHost(h); err != nil {
			return nil, fmt.Errorf("init control-plane directory: %w", err)
		}
	}
	for _, name := range []string{CACertFile, CAKeyFile, SigningKeyFile, BrokerCertFileName, BrokerKeyFileName, ControlPlaneCertFile, ControlPlaneKeyFile, SigningPubFile, PoolsDir} {
		if _, err := os.Lstat(filepath.Join(path, name)); err == nil {
			return nil, fmt.Errorf("init %s: %w (it has %s); refusing to overwrite it", path, ErrAlreadyInitialized, name)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("init %s: %w", path, err)
		}
	}
	created := false
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(path, 0o700); err != nil {
			return nil, fmt.Errorf("init %s: %w", path, err)
		}
		created = true
	} else if err != nil {
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	if entries, err := os.ReadDir(path); err != nil {
		return nil, fmt.Errorf("init %s: %w", path, err)
	} else if created || len(entries) == 0 {
		if err := os.Chmod(path, 0o700); err != nil {
			return nil, fmt.Errorf("init %s: %w", path, err)
		}
	}

	ca, err := pki.NewCA("Hangar control-plane CA")
	if err != nil {
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	caKeyPEM, err := pki.EncodeKeyPEM(ca.Key)
	if err != nil {
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	brokerCert, brokerKey, err := pki.IssueServerCert(ca, brokerHosts)
	if err != nil {
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	cpCert, cpKey, err := pki.IssueClientCert(ca, ControlPlaneCN)
	if err != nil {
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("init %s: signing key: %w", path, err)
	}
	signKeyPEM, err := pki.EncodeKeyPEM(priv)
	if err != nil {
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("init %s: signing key: %w", path, err)
	}
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{CAKeyFile, caKeyPEM, 0o600},
		{BrokerCertFileName, brokerCert, 0o644},
		{BrokerKeyFileName, brokerKey, 0o600},
		{ControlPlaneCertFile, cpCert, 0o644},
		{ControlPlaneKeyFile, cpKey, 0o600},
		{SigningKeyFile, signKeyPEM, 0o600},
		{SigningPubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644},
		{CACertFile, ca.CertPEM, 0o644}, // last: its presence marks a complete directory
	}
	var written []string // removed in reverse order if Init fails
	undo := func() {
		for i := len(written) - 1; i >= 0; i-- {
			os.Remove(written[i])
		}
	}
	if err := os.Mkdir(filepath.Join(path, PoolsDir), 0o700); err != nil {
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	written = append(written, filepath.Join(path, PoolsDir))
	for _, f := range files {
		p := filepath.Join(path, f.name)
		if err := atomicfile.Write(p, f.data, f.perm); err != nil {
			undo()
			return nil, fmt.Errorf("init %s: %w", path, err)
		}
		written = append(written, p)
	}
	clear(caKeyPEM)
	clear(signKeyPEM)
	clear(priv)
	d, err := Open(path)
	if err != nil {
		undo()
		return nil, err
	}
	return d, nil
}

// Open opens an initialized control-plane directory: path, or the control
// plane of the `hangarctl dev` stack whose directory path is (Resolve).
func Open(path string) (*Dir, error) {
	given := path
	path = Resolve(path)
	notDir := func(why string) error {
		return fmt.Errorf("%s is %w: %s; give the directory of `hangarctl ca init` (or the directory `hangarctl dev` printed, which holds %s/), or create a control plane there with hangarctl ca init --dir %s",
			given, ErrNotInitialized, why, DevSubdir, given)
	}
	if path == "" {
		return nil, fmt.Errorf("open control-plane directory: empty path: %w", ErrNotInitialized)
	}
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, notDir("it does not exist")
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if !fi.IsDir() {
		return nil, notDir("it is not a directory")
	}
	for _, name := range []string{CACertFile, CAKeyFile, SigningPubFile, SigningKeyFile, BrokerCertFileName, BrokerKeyFileName, ControlPlaneCertFile, ControlPlaneKeyFile} {
		if _, err := os.Stat(filepath.Join(path, name)); errors.Is(err, fs.ErrNotExist) {
			return nil, notDir(name + " is missing")
		}
	}
	d := &Dir{path: path}
	certPEM, err := os.ReadFile(d.file(CACertFile))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	keyPEM, err := os.ReadFile(d.file(CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	d.ca, err = pki.LoadCA(certPEM, keyPEM)
	clear(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	pubPEM, err := os.ReadFile(d.file(SigningPubFile))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	block, _ := pem.Decode(pubPEM)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("open %s: %s: no PUBLIC KEY PEM block", path, SigningPubFile)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("open %s: %s: %w", path, SigningPubFile, err)
	}
	vk, ok := pub.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("open %s: %s: key is %T, want Ed25519", path, SigningPubFile, pub)
	}
	d.verifyKey = vk
	sk, err := d.SigningKey()
	if err != nil {
		return nil, err
	}
	matches := bytes.Equal(sk.Public().(ed25519.PublicKey), vk)
	clear(sk)
	if !matches {
		return nil, fmt.Errorf("open %s: %s does not match %s", path, SigningPubFile, SigningKeyFile)
	}
	return d, nil
}

func (d *Dir) file(name string) string { return filepath.Join(d.path, name) }

// Path returns the directory's path.
func (d *Dir) Path() string { return d.path }

// CAFile returns the path of the CA certificate (PEM).
func (d *Dir) CAFile() string { return d.file(CACertFile) }

// BrokerCertFile returns the path of the broker's certificate (PEM).
func (d *Dir) BrokerCertFile() string { return d.file(BrokerCertFileName) }

// BrokerKeyFile returns the path of the broker's private key (PKCS#8 PEM, 0600).
func (d *Dir) BrokerKeyFile() string { return d.file(BrokerKeyFileName) }

// ClientCertFile returns the path of the control plane's client certificate.
func (d *Dir) ClientCertFile() string { return d.file(ControlPlaneCertFile) }

// ClientKeyFile returns the path of the control plane's client key (0600).
func (d *Dir) ClientKeyFile() string { return d.file(ControlPlaneKeyFile) }

// CAPEM returns the CA certificate PEM.
func (d *Dir) CAPEM() []byte { return bytes.Clone(d.ca.CertPEM) }

// CACertPool returns a certificate pool holding only the CA.
func (d *Dir) CACertPool() *x509.CertPool { return d.ca.CertPool() }

// BrokerTLS returns the broker's server TLS configuration: its certificate, and
// a client certificate from the CA required and verified.
func (d *Dir) BrokerTLS() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(d.BrokerCertFile(), d.BrokerKeyFile())
	if err != nil {
		return nil, fmt.Errorf("broker TLS: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    d.ca.CertPool(),
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// ClientTLS returns the control plane's client TLS configuration for the broker
// at serverName (a host name or IP the broker certificate names).
func (d *Dir) ClientTLS(serverName string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(d.ClientCertFile(), d.ClientKeyFile())
	if err != nil {
		return nil, fmt.Errorf("control-plane TLS: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      d.ca.CertPool(),
		ServerName:   serverName,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// SigningKey reads the run-signing key. It is read on each call and not kept.
func (d *Dir) SigningKey() (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(d.file(SigningKeyFile))
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	defer clear(b)
	k, err := pki.ParseKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", d.file(SigningKeyFile), err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: key is %T, want Ed25519", d.file(SigningKeyFile), k)
	}
	return ek, nil
}

// VerifyKey returns the run-verification key (the public half of SigningKey).
func (d *Dir) VerifyKey() ed25519.PublicKey { return bytes.Clone(d.verifyKey) }

// CreatePool signs the pool's CSR (the CSR's CN is ignored: the certificate's CN
// is the pool id, which is name), records the pool and returns it with its token.
// broker is the address pools connect to, mqtts://HOST:PORT. It refuses an
// existing name.
func (d *Dir) CreatePool(name string, csrPEM []byte, broker string) (*Pool, string, error) {
	if err := ValidPoolName(name); err != nil {
		return nil, "", fmt.Errorf("create pool: %w", err)
	}
	recPath := d.poolFile(name)
	if _, err := os.Lstat(recPath); err == nil {
		return nil, "", fmt.Errorf("create pool: %w: %s", ErrPoolExists, name)
	}
	certPEM, err := pki.SignCSR(d.ca, csrPEM, name, pki.PoolValidity)
	if err != nil {
		return nil, "", fmt.Errorf("create pool %s: %w", name, err)
	}
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		return nil, "", fmt.Errorf("create pool %s: %w", name, err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil {
		return nil, "", fmt.Errorf("create pool %s: %w", name, err)
	}
	rec := &poolRecord{
		Name:           name,
		ID:             name,
		Broker:         broker,
		CertificatePEM: string(certPEM),
		PublicKeyPEM:   string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})),
		CreatedAt:      time.Now().UTC().Truncate(time.Second),
	}
	token, err := d.token(rec) // validates the broker address too
	if err != nil {
		return nil, "", fmt.Errorf("create pool %s: %w", name, err)
	}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return nil, "", fmt.Errorf("create pool %s: %w", name, err)
	}
	if err := atomicfile.Create(recPath, append(data, '\n'), 0o644); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, "", fmt.Errorf("create pool: %w: %s", ErrPoolExists, name)
		}
		return nil, "", fmt.Errorf("create pool %s: %w", name, err)
	}
	p, err := rec.pool()
	if err != nil {
		return nil, "", fmt.Errorf("create pool %s: %w", name, err)
	}
	return p, token, nil
}

// Pool returns the pool called name.
func (d *Dir) Pool(name string) (*Pool, error) {
	rec, err := d.readPool(name)
	if err != nil {
		return nil, err
	}
	p, err := rec.pool()
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", name, err)
	}
	return p, nil
}

// Pools returns every pool, sorted by name.
func (d *Dir) Pools() ([]*Pool, error) {
	entries, err := os.ReadDir(d.file(PoolsDir))
	if err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	var out []*Pool
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() || ValidPoolName(name) != nil {
			continue
		}
		p, err := d.Pool(name)
		if err != nil {
			return nil, fmt.Errorf("list pools: %w", err)
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Token returns the pool token of the pool called name (the same one CreatePool
// returned).
func (d *Dir) Token(name string) (string, error) {
	rec, err := d.readPool(name)
	if err != nil {
		return "", err
	}
	t, err := d.token(rec)
	if err != nil {
		return "", fmt.Errorf("pool %s: %w", name, err)
	}
	return t, nil
}

func (d *Dir) token(rec *poolRecord) (string, error) {
	t := &pooltoken.Token{
		Version:            pooltoken.Version,
		Broker:             rec.Broker,
		PoolID:             rec.ID,
		BrokerCAPEM:        string(d.ca.CertPEM),
		CertificatePEM:     rec.CertificatePEM,
		RunVerificationKey: base64.StdEncoding.EncodeToString(d.verifyKey),
	}
	return t.Encode()
}

func (d *Dir) poolFile(name string) string {
	return filepath.Join(d.path, PoolsDir, name+".json")
}

func (d *Dir) readPool(name string) (*poolRecord, error) {
	if err := ValidPoolName(name); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(d.poolFile(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s (in %s; hangarctl pool list --dir %s lists its pools)", ErrPoolNotFound, name, d.path, d.path)
	}
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", name, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var rec poolRecord
	if err := dec.Decode(&rec); err != nil {
		return nil, fmt.Errorf("pool %s: %s: %w", name, d.poolFile(name), err)
	}
	if rec.Name != name {
		return nil, fmt.Errorf("pool %s: %s names pool %q", name, d.poolFile(name), rec.Name)
	}
	return &rec, nil
}

func (r *poolRecord) pool() (*Pool, error) {
	cert, err := pki.ParseCertPEM([]byte(r.CertificatePEM))
	if err != nil {
		return nil, err
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("certificate key is %T, want RSA", cert.PublicKey)
	}
	return &Pool{
		Name:           r.Name,
		ID:             r.ID,
		Broker:         r.Broker,
		PublicKey:      pub,
		CertificatePEM: []byte(r.CertificatePEM),
		CreatedAt:      r.CreatedAt,
	}, nil
}

// DevSubdir is where `hangarctl dev` keeps its control plane, under its
// directory.
const DevSubdir = "control-plane"

// Resolve is the control-plane directory for path: path itself, or, when
// path is the directory of a `hangarctl dev` stack (it has no CA but its
// DevSubdir has), that subdirectory.
func Resolve(path string) string {
	if path == "" {
		return path
	}
	if _, err := os.Stat(filepath.Join(path, CACertFile)); err == nil {
		return path
	}
	sub := filepath.Join(path, DevSubdir)
	if _, err := os.Stat(filepath.Join(sub, CACertFile)); err == nil {
		return sub
	}
	return path
}
