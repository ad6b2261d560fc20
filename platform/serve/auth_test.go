package serve_test

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/platform/serve"
	"github.com/hangar-dev/hangar/platform/telemetry"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
	"github.com/hangar-dev/hangar/platform/tlsconfig/testpki"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

func rolePool(t *testing.T, ca *testpki.CA, pool, role, id string) *tlsconfig.Pool {
	t.Helper()
	cert, key, err := ca.IssueRole(pool, role, id, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	p, err := tlsconfig.LoadPool(ca.CertPEM(), cert, key, tlsconfig.Role(role))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRoleAccess: with a pool certificate, each method is open only to the
// roles Access lists, a method not listed to no one, and the caller's
// identity reaches the handler's context.
func TestRoleAccess(t *testing.T) {
	ca, err := testpki.NewCA("pool CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := testpki.NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	server := rolePool(t, ca, "p1", "logship", "ls")
	h := start(t, serve.Config{TLS: server.ServerConfig(), Access: serve.Access{
		"/" + probeService + "/Ping": {tlsconfig.RoleOperator},
		"/" + probeService + "/Fail": {tlsconfig.RoleExecutor, tlsconfig.RoleOperator},
	}}, credentials.NewTLS(rolePool(t, ca, "p1", "operator", "alice").ClientConfig(tlsconfig.RoleLogship)))

	tests := []struct {
		name   string
		client *tlsconfig.Pool
		method string
		want   codes.Code
		msg    string
	}{
		{"operator may Ping", rolePool(t, ca, "p1", "operator", "alice"), "Ping", codes.OK, ""},
		{"executor may not Ping", rolePool(t, ca, "p1", "executor", "e1"), "Ping", codes.PermissionDenied, "open to operator certificates"},
		{"gateway may not Ping", rolePool(t, ca, "p1", "gateway", "g1"), "Ping", codes.PermissionDenied, "gateway certificate"},
		{"executor reaches Fail", rolePool(t, ca, "p1", "executor", "e1"), "Fail", codes.NotFound, ""},
		{"unlisted method refused to all", rolePool(t, ca, "p1", "operator", "alice"), "Panic", codes.PermissionDenied, "not open to any role"},
		{"operator of another pool", rolePool(t, ca, "p2", "operator", "alice"), "Ping", codes.Unavailable, ""},
		{"operator of another CA", rolePool(t, other, "p1", "operator", "alice"), "Ping", codes.Unavailable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := grpc.NewClient(h.srv.GRPCAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(clientTrusting(tt.client, ca).ClientConfig(tlsconfig.RoleLogship))))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(ctxT(t), 3*time.Second)
			defer cancel()
			err = conn.Invoke(ctx, "/"+probeService+"/"+tt.method, &emptypb.Empty{}, &emptypb.Empty{})
			if status.Code(err) != tt.want || !strings.Contains(status.Convert(err).Message(), tt.msg) {
				t.Errorf("%s = %v, want %v containing %q", tt.method, err, tt.want, tt.msg)
			}
		})
	}
}

// clientTrusting is p's client configuration, but trusting the server's CA
// (so that a client of another CA reaches the server's own check).
func clientTrusting(p *tlsconfig.Pool, serverCA *testpki.CA) *tlsconfig.Pool {
	c := *p
	c.CAs = newCertPool(serverCA.CertPEM())
	c.Identity.Pool = "p1"
	return &c
}

// TestClientChecksServerRole: a client wanting a gateway refuses a server
// presenting another role.
func TestClientChecksServerRole(t *testing.T) {
	ca, err := testpki.NewCA("pool CA")
	if err != nil {
		t.Fatal(err)
	}
	server := rolePool(t, ca, "p1", "executor", "e1") // an executor posing as gateway
	h := start(t, serve.Config{TLS: server.ServerConfig()}, nil)
	client := rolePool(t, ca, "p1", "executor", "e2")
	conn, err := grpc.NewClient(h.srv.GRPCAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(client.ClientConfig(tlsconfig.RoleGateway))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctxT(t), 3*time.Second)
	defer cancel()
	if err := conn.Invoke(ctx, "/"+probeService+"/Ping", &emptypb.Empty{}, &emptypb.Empty{}); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "want gateway") {
		t.Errorf("Ping to an executor posing as gateway = %v, want Unavailable naming the role", err)
	}
}

func TestPlaintextRefusedOffLoopback(t *testing.T) {
	for _, tt := range []struct {
		addr     string
		insecure bool
		refused  bool
	}{
		{":0", false, true},
		{"0.0.0.0:0", false, true},
		{"[::]:0", false, true},
		{"127.0.0.1:0", false, false},
		{"localhost:0", false, false},
		{"[::1]:0", false, false},
		{":0", true, false},
	} {
		_, err := serve.New(serve.Config{ServiceName: "x", GRPCAddr: tt.addr, InsecurePlaintext: tt.insecure}, serve.Deps{Registry: telemetry.NewRegistry("x")})
		if tt.refused != (err != nil) {
			t.Errorf("New(%s, insecure=%v) = %v, refused want %v", tt.addr, tt.insecure, err, tt.refused)
		}
		if err != nil && !strings.Contains(err.Error(), serve.EnvInsecurePlaintext) {
			t.Errorf("the refusal does not name the switch: %v", err)
		}
	}
}

// TestPlaintextWarns: every start in plaintext says so at WARN level.
func TestPlaintextWarns(t *testing.T) {
	h := start(t, serve.Config{}, nil)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(h.logs.String(), "level=WARN msg=\"gRPC serves in PLAINTEXT") {
		if time.Now().After(deadline) {
			t.Fatalf("no WARN about plaintext in:\n%s", h.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newCertPool(pemBytes []byte) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(pemBytes)
	return p
}
