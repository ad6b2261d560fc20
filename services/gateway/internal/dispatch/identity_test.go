package dispatch

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	workv1 "github.com/hangar-dev/hangar/gen/go/hangar/work/v1"
	"github.com/hangar-dev/hangar/platform/runcred"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
	"github.com/hangar-dev/hangar/platform/tlsconfig/testpki"
)

func rolePool(t *testing.T, ca *testpki.CA, role, id string) *tlsconfig.Pool {
	t.Helper()
	cert, key, err := ca.IssueRole("pool-a", role, id, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	p, err := tlsconfig.LoadPool(ca.CertPEM(), cert, key, tlsconfig.Role(role))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestExecutorIDFromCertificate: with TLS the executor's id is the one in
// its certificate, a Hello naming another is refused, and each Assign
// carries a run credential bound to that id which logship accepts.
func TestExecutorIDFromCertificate(t *testing.T) {
	ca, err := testpki.NewCA("pool CA")
	if err != nil {
		t.Fatal(err)
	}
	gwPool := rolePool(t, ca, "gateway", "gateway")
	issuer, err := runcred.NewIssuer(gwPool, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	d := New(Config{PoolID: "pool-a", LeaseDuration: 10 * time.Second, Credentials: issuer, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()}, &recorder{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(gwPool.ServerConfig())))
	workv1.RegisterWorkServiceServer(srv, d)
	go srv.Serve(lis)
	ctx, cancel := context.WithCancel(context.Background())
	go d.Serve(ctx)
	t.Cleanup(func() { cancel(); srv.Stop() })
	client := func(role, id string) workv1.WorkServiceClient {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(rolePool(t, ca, role, id).ClientConfig(tlsconfig.RoleGateway))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return workv1.NewWorkServiceClient(conn)
	}

	refused := func(c workv1.WorkServiceClient, hello *workv1.Hello) error {
		s, err := c.Attach(context.Background())
		if err != nil {
			return err
		}
		_ = s.Send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Hello{Hello: hello}})
		_, err = s.Recv()
		return err
	}
	if err := refused(client("executor", "e1"), &workv1.Hello{ExecutorId: "e2", Slots: 1}); status.Code(err) != codes.PermissionDenied ||
		!strings.Contains(err.Error(), `"e2" disagrees with the certificate's executor id "e1"`) {
		t.Fatalf("Hello naming another executor: %v, want PermissionDenied naming both ids", err)
	}
	if err := refused(client("operator", "e1"), &workv1.Hello{Slots: 1}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("an operator certificate attaching: %v, want PermissionDenied", err)
	}

	// An empty executor id is the certificate's.
	e1 := attach(t, client("executor", "e1"), &workv1.Hello{Slots: 1})
	if got := d.Executors(); len(got) != 1 || got[0].GetExecutorId() != "e1" {
		t.Fatalf("executors %v, want e1 from the certificate", got)
	}
	if err := d.Admit(context.Background(), run("r1")); err != nil {
		t.Fatal(err)
	}
	a := e1.next().GetAssign()
	if a.GetLogCredential() == nil {
		t.Fatal("Assign carries no run credential")
	}
	checker := runcred.NewChecker(rolePool(t, ca, "logship", "logship"))
	if _, err := checker.Check(a.GetLogCredential(), "r1", tlsconfig.Identity{Pool: "pool-a", Role: tlsconfig.RoleExecutor, ID: "e1"}); err != nil {
		t.Fatalf("logship refuses the credential of the run's executor: %v", err)
	}
	if _, err := checker.Check(a.GetLogCredential(), "r1", tlsconfig.Identity{Pool: "pool-a", Role: tlsconfig.RoleExecutor, ID: "e2"}); err == nil {
		t.Fatal("logship accepts the credential from another executor")
	}
}
