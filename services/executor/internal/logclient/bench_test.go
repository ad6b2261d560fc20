package logclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
)

// discardStore acknowledges every chunk at once and keeps nothing.
type discardStore struct {
	logsv1.UnimplementedLogServiceServer
}

func (discardStore) Ship(st logsv1.LogService_ShipServer) error {
	if _, err := st.Recv(); err != nil {
		return err
	}
	if err := st.Send(&logsv1.ShipResponse{Kind: &logsv1.ShipResponse_Opened{Opened: &logsv1.Opened{NextSequence: 1}}}); err != nil {
		return err
	}
	var size uint64
	for {
		m, err := st.Recv()
		if err != nil {
			return err
		}
		switch k := m.Kind.(type) {
		case *logsv1.ShipRequest_Chunk:
			size += uint64(len(k.Chunk.GetData()))
			if err := st.Send(&logsv1.ShipResponse{Kind: &logsv1.ShipResponse_Ack{Ack: &logsv1.Ack{ThroughSequence: k.Chunk.GetSequence()}}}); err != nil {
				return err
			}
		case *logsv1.ShipRequest_Close:
			return st.Send(&logsv1.ShipResponse{Kind: &logsv1.ShipResponse_Closed{Closed: &logsv1.Closed{Bytes: size}}})
		}
	}
}

func selfSigned(b *testing.B) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// cpuTime is the user and system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkStream is one run's 256 MiB through a Stream, written 64 KiB
// at a time as the relay receiver does, over TLS on loopback to a server
// that acknowledges every chunk and keeps nothing: the executor's share of
// the log stream, and gRPC's.
func BenchmarkStream(b *testing.B) {
	const total = 256 << 20
	cert := selfSigned(b)
	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool.AddCert(leaf)
	b.Run("tls", func(b *testing.B) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
		logsv1.RegisterLogServiceServer(srv, discardStore{})
		go srv.Serve(lis)
		defer srv.Stop()
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		c := logsv1.NewLogServiceClient(conn)
		p := make([]byte, 64<<10)
		for i := range p {
			p[i] = 'a' + byte(i%26)
		}
		b.SetBytes(total)
		cpu0 := cpuTime()
		for b.Loop() {
			st := Open(context.Background(), c, &logsv1.Open{RunId: "r"}, Options{})
			w := st.Writer(logsv1.Stream_STREAM_STDOUT)
			for range total / len(p) {
				if _, err := w.Write(p); err != nil {
					b.Fatal(err)
				}
			}
			closed, err := st.Close(context.Background())
			if err != nil || closed.GetBytes() != total {
				b.Fatalf("closed %v, %v", closed, err)
			}
		}
		// CPU time rather than wall time: the host is shared.
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/total, "cpu-ns/B")
	})
}
