package tlsconfig

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Role is what a certificate of the pool-internal CA is good for. Each
// certificate carries exactly one role (ADR 0008).
type Role string

// The roles of the pool.
const (
	RoleGateway  Role = "gateway"
	RolePolicy   Role = "policy"
	RoleLogship  Role = "logship"
	RoleExecutor Role = "executor"
	RoleOperator Role = "operator"
)

// Roles lists every role, in a stable order.
var Roles = []Role{RoleGateway, RolePolicy, RoleLogship, RoleExecutor, RoleOperator}

// Valid reports whether r is one of Roles.
func (r Role) Valid() bool {
	for _, x := range Roles {
		if r == x {
			return true
		}
	}
	return false
}

// TrustDomain is the host part of every identity URI.
const TrustDomain = "hangar"

// validName says whether s may be a pool name or an id: 1 to 128 of what a
// run id, a host name or a Kubernetes pod name is made of (letters, digits,
// '.', '_', '-'), starting with a letter or digit. Checked by hand: the
// regular expression's 128-fold repetition cost every process that links
// this package (hangarctl among them) ~1,700 allocations at init.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// Identity is who a certificate of the pool-internal CA names: the URI SAN
// spiffe://hangar/<pool>/<role>/<id>.
type Identity struct {
	Pool string
	Role Role
	ID   string
}

// ErrNoIdentity is returned when a certificate carries no Hangar identity.
var ErrNoIdentity = errors.New("certificate carries no hangar identity (URI SAN spiffe://hangar/<pool>/<role>/<id>)")

// Validate checks that the pool and id are well formed and the role known.
func (id Identity) Validate() error {
	if !validName(id.Pool) {
		return fmt.Errorf("identity: pool %q: want 1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit", id.Pool)
	}
	if !id.Role.Valid() {
		return fmt.Errorf("identity: unknown role %q (want one of %s)", id.Role, roleList())
	}
	if !validName(id.ID) {
		return fmt.Errorf("identity: id %q: want 1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit", id.ID)
	}
	return nil
}

// URI returns the identity as the URI put in certificates.
func (id Identity) URI() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: "/" + id.Pool + "/" + string(id.Role) + "/" + id.ID}
}

// String is the identity's URI.
func (id Identity) String() string { return id.URI().String() }

// ParseIdentity parses spiffe://hangar/<pool>/<role>/<id>.
func ParseIdentity(s string) (Identity, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Identity{}, fmt.Errorf("identity %q: %w", s, err)
	}
	return identityFromURI(u)
}

func identityFromURI(u *url.URL) (Identity, error) {
	if u.Scheme != "spiffe" || u.Host != TrustDomain || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return Identity{}, fmt.Errorf("identity %q: want spiffe://%s/<pool>/<role>/<id>", u, TrustDomain)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 3 {
		return Identity{}, fmt.Errorf("identity %q: want spiffe://%s/<pool>/<role>/<id>", u, TrustDomain)
	}
	id := Identity{Pool: parts[0], Role: Role(parts[1]), ID: parts[2]}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("identity %q: %w", u, err)
	}
	return id, nil
}

// IdentityOf returns the identity a certificate carries: its only URI SAN
// under spiffe://hangar/. A certificate with none, or with more than one,
// has no identity. It does not verify the certificate: call it on verified
// chains only.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, ErrNoIdentity
	}
	var found []Identity
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" || u.Host != TrustDomain {
			continue
		}
		id, err := identityFromURI(u)
		if err != nil {
			return Identity{}, err
		}
		found = append(found, id)
	}
	switch len(found) {
	case 0:
		return Identity{}, ErrNoIdentity
	case 1:
		return found[0], nil
	default:
		return Identity{}, fmt.Errorf("certificate carries %d hangar identities; a certificate is good for one role", len(found))
	}
}

func roleList() string {
	var s []string
	for _, r := range Roles {
		s = append(s, string(r))
	}
	return strings.Join(s, ", ")
}
