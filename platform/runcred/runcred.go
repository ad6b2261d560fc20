// Package runcred issues and checks run credentials (ADR 0009): what lets
// the executor holding a run's current lease, and no one else, ship that
// run's output to logship.
//
// The gateway issues a credential with every Assign, signed with its own TLS
// key and carrying its certificate chain; logship checks it with nothing but
// the pool CA: signature, gateway role and pool, run, executor (the caller's
// certificate id), expiry, and that the epoch is not older than one it has
// already accepted for the run.
package runcred

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
	"google.golang.org/protobuf/proto"
)

// domain separates credential signatures from anything else the gateway's
// key signs (TLS handshakes).
const domain = "hangar.runcred.v1\x00"

// resumeSuffix is appended to a run id for the log of its resumed phases
// (the executor's ResumeLogID, for ids short enough).
const resumeSuffix = "-resumed"

// MaxLifetime is the longest validity logship accepts, whatever a credential
// claims.
const MaxLifetime = 48 * time.Hour

// ErrRefused wraps every reason a credential is refused.
var ErrRefused = errors.New("run credential refused")

// Issuer signs credentials with the gateway's pool certificate.
type Issuer struct {
	signer crypto.Signer
	chain  [][]byte
	pool   string
	ttl    time.Duration
	now    func() time.Time
}

// NewIssuer returns an Issuer signing with p's key (p must be a gateway's)
// for credentials valid ttl.
func NewIssuer(p *tlsconfig.Pool, ttl time.Duration) (*Issuer, error) {
	if p == nil {
		return nil, errors.New("run credentials: no pool certificate")
	}
	if p.Identity.Role != tlsconfig.RoleGateway {
		return nil, fmt.Errorf("run credentials: %s is not a gateway certificate", p.Identity)
	}
	if ttl <= 0 || ttl > MaxLifetime {
		return nil, fmt.Errorf("run credentials: lifetime %v out of range (0, %v]", ttl, MaxLifetime)
	}
	s, ok := p.Cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("run credentials: the gateway's key (%T) cannot sign", p.Cert.PrivateKey)
	}
	return &Issuer{signer: s, chain: p.Cert.Certificate, pool: p.Identity.Pool, ttl: ttl, now: time.Now}, nil
}

// Issue returns the credential of run at epoch for executor.
func (is *Issuer) Issue(runID string, epoch uint64, executorID string) (*logsv1.RunCredential, error) {
	now := is.now()
	claims, err := proto.MarshalOptions{Deterministic: true}.Marshal(&logsv1.RunClaims{
		RunId: runID, Epoch: epoch, ExecutorId: executorID, PoolId: is.pool,
		IssuedUnixMs: now.UnixMilli(), ExpiresUnixMs: now.Add(is.ttl).UnixMilli(),
	})
	if err != nil {
		return nil, fmt.Errorf("issue run credential: %w", err)
	}
	sig, err := sign(is.signer, append([]byte(domain), claims...))
	if err != nil {
		return nil, fmt.Errorf("issue run credential: %w", err)
	}
	return &logsv1.RunCredential{Claims: claims, Signature: sig, GatewayChain: is.chain}, nil
}

func sign(s crypto.Signer, msg []byte) ([]byte, error) {
	if _, ok := s.Public().(ed25519.PublicKey); ok {
		return s.Sign(rand.Reader, msg, crypto.Hash(0))
	}
	sum := sha256.Sum256(msg)
	return s.Sign(rand.Reader, sum[:], crypto.SHA256)
}

func verify(pub crypto.PublicKey, msg, sig []byte) error {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		if !ed25519.Verify(k, msg, sig) {
			return errors.New("bad signature")
		}
		return nil
	case *ecdsa.PublicKey:
		sum := sha256.Sum256(msg)
		if !ecdsa.VerifyASN1(k, sum[:], sig) {
			return errors.New("bad signature")
		}
		return nil
	case *rsa.PublicKey:
		sum := sha256.Sum256(msg)
		if rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], sig) != nil {
			return errors.New("bad signature")
		}
		return nil
	default:
		return fmt.Errorf("unsupported gateway key type %T", pub)
	}
}

// Checker checks credentials on logship and remembers, per run, the highest
// epoch it accepted.
type Checker struct {
	cas  *x509.CertPool
	pool string
	now  func() time.Time

	mu     sync.Mutex
	epochs map[string]seen
}

type seen struct {
	epoch   uint64
	expires time.Time
}

// NewChecker returns a Checker trusting gateways of p's pool under p's CA.
func NewChecker(p *tlsconfig.Pool) *Checker {
	return &Checker{cas: p.CAs, pool: p.Identity.Pool, now: time.Now, epochs: map[string]seen{}}
}

// Grant is an accepted credential: who may ship which run's log.
type Grant struct {
	RunID, ExecutorID string
	Epoch             uint64
}

// Check verifies cred for an Open of logID by the executor whose certificate
// names caller. On success the credential's epoch becomes the run's current
// one (if higher). Errors wrap ErrRefused and name the failed check.
func (c *Checker) Check(cred *logsv1.RunCredential, logID string, caller tlsconfig.Identity) (Grant, error) {
	refuse := func(format string, args ...any) (Grant, error) {
		return Grant{}, fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
	}
	if cred == nil || len(cred.GetClaims()) == 0 {
		return refuse("Open carries no run credential (the gateway issues it with Assign)")
	}
	now := c.now()
	gw, err := tlsconfig.VerifyChain(cred.GetGatewayChain(), c.cas, now)
	if err != nil {
		return refuse("signer: %v", err)
	}
	if gw.Role != tlsconfig.RoleGateway || gw.Pool != c.pool {
		return refuse("signer %s is not a gateway of pool %s", gw, c.pool)
	}
	leaf, err := x509.ParseCertificate(cred.GetGatewayChain()[0])
	if err != nil {
		return refuse("signer certificate: %v", err)
	}
	if err := verify(leaf.PublicKey, append([]byte(domain), cred.GetClaims()...), cred.GetSignature()); err != nil {
		return refuse("signature of %s: %v", gw, err)
	}
	var cl logsv1.RunClaims
	if err := proto.Unmarshal(cred.GetClaims(), &cl); err != nil {
		return refuse("claims do not parse: %v", err)
	}
	switch {
	case cl.GetPoolId() != c.pool:
		return refuse("issued for pool %q, this is pool %q", cl.GetPoolId(), c.pool)
	case logID != cl.GetRunId() && logID != ResumeLogID(cl.GetRunId()):
		return refuse("issued for run %q, not for log %q", cl.GetRunId(), logID)
	case caller.Role != tlsconfig.RoleExecutor:
		return refuse("the caller %s is not an executor", caller)
	case cl.GetExecutorId() != caller.ID:
		return refuse("issued to executor %q, the caller's certificate names %q", cl.GetExecutorId(), caller.ID)
	}
	expires := time.UnixMilli(cl.GetExpiresUnixMs())
	if !now.Before(expires) {
		return refuse("expired at %s", expires.UTC().Format(time.RFC3339))
	}
	if expires.Sub(time.UnixMilli(cl.GetIssuedUnixMs())) > MaxLifetime {
		return refuse("lifetime longer than %v", MaxLifetime)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gcLocked(now)
	cur, ok := c.epochs[cl.GetRunId()]
	if ok && cl.GetEpoch() < cur.epoch {
		return refuse("lease epoch %d of run %s is not current (epoch %d has shipped since)", cl.GetEpoch(), cl.GetRunId(), cur.epoch)
	}
	if !ok || cl.GetEpoch() > cur.epoch || expires.After(cur.expires) {
		c.epochs[cl.GetRunId()] = seen{epoch: max(cl.GetEpoch(), cur.epoch), expires: expires}
	}
	return Grant{RunID: cl.GetRunId(), ExecutorID: cl.GetExecutorId(), Epoch: cl.GetEpoch()}, nil
}

// Current reports whether g is still the newest lease that shipped its run:
// a stream opened under an older epoch stops being taken.
func (c *Checker) Current(g Grant) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, ok := c.epochs[g.RunID]
	return !ok || cur.epoch <= g.Epoch
}

// gcLocked forgets runs whose newest credential has expired: no credential
// of theirs can pass anymore, old or new epoch alike, until the gateway
// issues a newer one.
func (c *Checker) gcLocked(now time.Time) {
	if len(c.epochs) < 1024 {
		return
	}
	for id, s := range c.epochs {
		if now.After(s.expires) {
			delete(c.epochs, id)
		}
	}
}

// ResumeLogID is the log id of a run's resumed phases (as the executor
// names it): the run id with "-resumed", or, when that would pass 64
// characters, a prefix and a digest of the run id.
func ResumeLogID(runID string) string {
	if len(runID)+len(resumeSuffix) <= 64 {
		return runID + resumeSuffix
	}
	sum := sha256.Sum256([]byte(runID))
	return runID[:64-len(resumeSuffix)-17] + "-" + fmt.Sprintf("%x", sum[:8]) + resumeSuffix
}
