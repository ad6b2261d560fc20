// Package dial is the client side of package serve: one way to open a gRPC
// connection to another Hangar service, with TLS, trace propagation and
// keepalives that the servers accept.
package dial

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/hangar-dev/hangar/platform/telemetry"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// Keepalive parameters of every connection: a ping after KeepaliveTime
// without activity, even with no RPC open (so that an idle executor notices
// a dead gateway), and the connection closed if no answer comes within
// KeepaliveTimeout. KeepaliveTime respects serve.MinClientPingInterval.
const (
	KeepaliveTime    = 20 * time.Second
	KeepaliveTimeout = 10 * time.Second
)

// Security is how Dial secures a connection.
type Security struct {
	// TLS is the client's mutual TLS configuration; nil means plaintext.
	TLS *tls.Config
	// InsecurePlaintext allows plaintext to a target off loopback
	// (HANGAR_INSECURE_PLAINTEXT).
	InsecurePlaintext bool
}

// Dial returns a client connection to target (a gRPC target such as
// "gateway:7443" or "dns:///gateway:7443"). The connection is made lazily,
// on the first RPC.
//
// sec secures the connection: mutual TLS (sec.TLS, see
// tlsconfig.ClientConfig), or, with a nil sec.TLS, plaintext, which Dial
// refuses to a target off loopback unless sec.InsecurePlaintext (see
// CheckPlaintext): no caller can reach another host in clear by forgetting
// a check. tel traces each RPC with a client span and propagates the
// caller's trace context; with a nil tel no span is recorded, but the trace
// context of the caller's ctx still travels to the server. opts come last
// and so override the defaults.
func Dial(target string, sec Security, tel *telemetry.Telemetry, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if target == "" {
		return nil, errors.New("dial: empty target")
	}
	var creds credentials.TransportCredentials
	if sec.TLS != nil {
		creds = credentials.NewTLS(sec.TLS)
	} else if err := CheckPlaintext(target, sec.InsecurePlaintext); err != nil {
		return nil, err
	} else {
		creds = insecure.NewCredentials()
	}
	all := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(
			otelgrpc.WithTracerProvider(tel.TracerProvider()),
			otelgrpc.WithPropagators(tel.Propagator()),
			otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
			otelgrpc.WithFilter(filters.Not(filters.ServicePrefix("grpc.health."))),
		)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                KeepaliveTime,
			Timeout:             KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
	}, opts...)
	conn, err := grpc.NewClient(target, all...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	return conn, nil
}

// CheckPlaintext refuses a plaintext connection to a target that is not on
// loopback unless insecure (HANGAR_INSECURE_PLAINTEXT) is set: run specs,
// secrets and logs must not cross a network in clear.
func CheckPlaintext(target string, insecure bool) error {
	if insecure || isLoopbackTarget(target) {
		return nil
	}
	return fmt.Errorf("dial %s: refusing a plaintext connection off loopback: give this service its pool certificate "+
		"(HANGAR_TLS_CA, HANGAR_TLS_CERT, HANGAR_TLS_KEY) or set HANGAR_INSECURE_PLAINTEXT=true", target)
}

func isLoopbackTarget(target string) bool {
	if i := strings.Index(target, ":///"); i >= 0 {
		target = target[i+4:]
	}
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		host = target
	}
	host = strings.TrimPrefix(strings.TrimSuffix(host, "]"), "[")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
