package serve

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/hangar-dev/hangar/platform/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// EnvInsecurePlaintext is the variable every service reads for
// Config.InsecurePlaintext.
const EnvInsecurePlaintext = "HANGAR_INSECURE_PLAINTEXT"

// Access says which roles may call which methods: full method name
// ("/hangar.logs.v1.LogService/Tail") to the roles allowed. With TLS, a
// method not listed is refused to everyone (PERMISSION_DENIED), except the
// gRPC health and reflection services, open to any certificate of the pool.
type Access map[string][]tlsconfig.Role

// PeerIdentity returns the identity of the certificate the caller of an RPC
// presented, when the server runs mutual TLS with a pool certificate.
func PeerIdentity(ctx context.Context) (tlsconfig.Identity, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return tlsconfig.Identity{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.PeerCertificates) == 0 {
		return tlsconfig.Identity{}, false
	}
	id, err := tlsconfig.IdentityOf(info.State.PeerCertificates[0])
	if err != nil {
		return tlsconfig.Identity{}, false
	}
	return id, true
}

// authorizer enforces Access on every RPC of a TLS server.
type authorizer struct {
	access Access
	log    *slog.Logger
}

func (a *authorizer) check(ctx context.Context, method string) error {
	if strings.HasPrefix(method, "/grpc.health.") || strings.HasPrefix(method, "/grpc.reflection.") {
		return nil
	}
	id, ok := PeerIdentity(ctx)
	if !ok {
		a.log.WarnContext(ctx, "refused a call without a pool identity", "method", method, "peer", peerAddr(ctx))
		return status.Error(codes.Unauthenticated, "a certificate of the pool CA with a hangar identity is required")
	}
	allowed, listed := a.access[method]
	for _, r := range allowed {
		if r == id.Role {
			return nil
		}
	}
	a.log.WarnContext(ctx, "refused a call from a role that may not make it", "method", method, "peer_identity", id.String(), "peer", peerAddr(ctx))
	if !listed {
		return status.Errorf(codes.PermissionDenied, "%s is not open to any role", method)
	}
	return status.Errorf(codes.PermissionDenied, "%s is open to %s certificates; %s is a %s certificate", method, roleNames(allowed), id, id.Role)
}

func (a *authorizer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (a *authorizer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

func roleNames(rs []tlsconfig.Role) string {
	var s []string
	for _, r := range rs {
		s = append(s, string(r))
	}
	return strings.Join(s, " or ")
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// IsLoopback reports whether a listen or dial address ("host:port") can only
// be reached from this machine: a loopback IP or "localhost". An empty host
// (every interface) is not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	host = strings.TrimPrefix(strings.TrimSuffix(host, "]"), "[")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkPlaintext refuses a plaintext gRPC server on a non-loopback address
// unless the insecure switch is set.
func checkPlaintext(cfg Config) error {
	if cfg.TLS != nil || cfg.GRPCAddr == "" || cfg.InsecurePlaintext || IsLoopback(cfg.GRPCAddr) {
		return nil
	}
	return fmt.Errorf("serve: refusing to serve gRPC in plaintext on %s, which is not a loopback address: "+
		"give the service its pool certificate (HANGAR_TLS_CA, HANGAR_TLS_CERT, HANGAR_TLS_KEY; hangarctl pki issues them) "+
		"or, knowing that anyone who reaches the port can then act as any service, set %s=true", cfg.GRPCAddr, EnvInsecurePlaintext)
}
