// Command attacker runs inside a run container in the attack test
// (attack_test.go): it tries to use the pool's gRPC services the way a
// hostile run would — Attach as an executor, Ship into a run, Tail a run's log,
// Evaluate — over plaintext and over TLS without a client certificate, at the
// Docker host as the container sees it (its default gateway and
// host.docker.internal) and at ATTACK_HOSTS (comma-separated names, e.g. the
// compose services), on ATTACK_PORTS. It prints one line per attempt:
//
//	ATTACK <addr> <method> <mode> refused: <reason>
//	ATTACK <addr> <method> <mode> ACCEPTED <n> bytes
//
// and never prints what a service sent back.
package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	policyv1 "github.com/hangar-dev/hangar/gen/go/hangar/policy/v1"
	workv1 "github.com/hangar-dev/hangar/gen/go/hangar/work/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func main() {
	runID := os.Getenv("ATTACK_RUN_ID")
	var ports []string
	for _, p := range strings.Split(os.Getenv("ATTACK_PORTS"), ",") {
		if p = strings.TrimSpace(p); p != "" {
			ports = append(ports, p)
		}
	}
	var hosts []string
	for _, h := range strings.Split(os.Getenv("ATTACK_HOSTS"), ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	if gw, err := defaultGateway(); err == nil {
		hosts = append(hosts, gw)
	} else {
		fmt.Println("ATTACK no default gateway:", err)
	}
	if addrs, err := net.LookupHost("host.docker.internal"); err == nil && len(addrs) > 0 {
		hosts = append(hosts, addrs[0])
	} else {
		fmt.Println("ATTACK host.docker.internal does not resolve")
	}
	for _, h := range hosts {
		for _, p := range ports {
			addr := net.JoinHostPort(h, p)
			for _, mode := range []string{"plaintext", "tls-no-cert"} {
				for _, m := range []string{"Attach", "Ship", "Tail", "Evaluate"} {
					n, err := try(addr, mode, m, runID)
					if err != nil {
						fmt.Printf("ATTACK %s %s %s refused: %s\n", addr, m, mode, reason(err))
					} else {
						fmt.Printf("ATTACK %s %s %s ACCEPTED %d bytes\n", addr, m, mode, n)
					}
				}
			}
		}
	}
	fmt.Println("ATTACK done")
}

func reason(err error) string {
	s := status.Convert(err)
	msg := s.Message()
	if len(msg) > 160 {
		msg = msg[:160]
	}
	return s.Code().String() + ": " + strings.ReplaceAll(msg, "\n", " ")
}

func try(addr, mode, method, runID string) (int, error) {
	creds := insecure.NewCredentials()
	if mode == "tls-no-cert" {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // the attacker trusts anything
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	switch method {
	case "Attach":
		st, err := workv1.NewWorkServiceClient(conn).Attach(ctx)
		if err != nil {
			return 0, err
		}
		if err := st.Send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Hello{Hello: &workv1.Hello{ExecutorId: "exec-1", Slots: 4}}}); err != nil {
			_, err = st.Recv()
			return 0, err
		}
		m, err := st.Recv()
		if err != nil {
			return 0, err
		}
		return proto.Size(m), nil
	case "Ship":
		st, err := logsv1.NewLogServiceClient(conn).Ship(ctx)
		if err != nil {
			return 0, err
		}
		if err := st.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Open{Open: &logsv1.Open{RunId: runID}}}); err != nil {
			_, err = st.Recv()
			return 0, err
		}
		m, err := st.Recv()
		if err != nil {
			return 0, err
		}
		return proto.Size(m), nil
	case "Tail":
		st, err := logsv1.NewLogServiceClient(conn).Tail(ctx, &logsv1.TailRequest{RunId: runID})
		if err != nil {
			return 0, err
		}
		m, err := st.Recv()
		if err != nil {
			return 0, err
		}
		return proto.Size(m), nil
	default:
		r, err := policyv1.NewPolicyServiceClient(conn).Evaluate(ctx, &policyv1.EvaluateRequest{Run: &policyv1.RunInput{Id: runID}})
		if err != nil {
			return 0, err
		}
		return proto.Size(r), nil
	}
}

// defaultGateway reads the container's default route from /proc/net/route.
func defaultGateway() (string, error) {
	b, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 3 || f[1] != "00000000" {
			continue
		}
		raw, err := hex.DecodeString(f[2])
		if err != nil || len(raw) != 4 {
			continue
		}
		ip := make(net.IP, 4)
		binary.BigEndian.PutUint32(ip, binary.LittleEndian.Uint32(raw))
		return ip.String(), nil
	}
	return "", fmt.Errorf("no default route")
}
