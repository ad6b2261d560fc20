package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	policyv1 "github.com/hangar-dev/hangar/gen/go/hangar/policy/v1"
	workv1 "github.com/hangar-dev/hangar/gen/go/hangar/work/v1"
	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// victimSecret is the secret variable of the run the attacks aim at.
const victimSecret = "victim-s3cr3t-9fQ2vLx7"

// TestAttack is the pool's trust boundary under attack (issue 9, ADR 0008,
// ADR 0009), over the real binaries started the way the README's by-hand
// set-up says: `hangarctl pki init` / `pki issue`, each service with its own
// HANGAR_TLS_* and listening on every interface. While a run holding a
// secret goes on, a process with no certificate, with another CA's
// certificate, with another executor's certificate and with an operator's
// certificate tries Attach, Ship into that run, Tail and Evaluate: each is
// refused, and nothing it receives holds the secret. Then a run container
// tries the same against the gateway, logship and policy ports at the Docker
// host and is refused.
func TestAttack(t *testing.T) {
	harness.RequireDocker(t)
	if err := bins.Build("executor", "logship"); err != nil {
		t.Fatal(err)
	}
	ctl := bins.Path(t, "hangarctl")
	harness.BusyboxImage(t, runnerImage)
	attackDir := buildAttacker(t)

	cp := harness.NewControlPlane(t, ctl)
	broker, _ := cp.StartEmbeddedBroker(t)
	key, csr := cp.Keygen(t, t.TempDir())
	const pool = "pool-sec"
	token := cp.CreatePool(t, pool, csr, broker)
	s3 := harness.StartS3(t, "hangar-logs")
	pt := cp.NewPoolTLS(t, pool)
	// Another CA that names the very same identities.
	other := cp.NewPoolTLS(t, pool)

	policy := harness.NewPolicy(t, bins.Path(t, "policy"), "", pt.Env(t, "policy", "policy")...)
	listenAll(policy.Service, "HANGAR_POLICY_GRPC_ADDR", policy.GRPCAddr)
	policy.Start(t)
	ls := harness.NewLogship(t, bins.Path(t, "logship"), s3, append(pt.Env(t, "logship", "logship"), "HANGAR_LOGSHIP_CHUNK_INTERVAL=300ms")...)
	listenAll(ls.Service, "HANGAR_LOGSHIP_GRPC_ADDR", ls.GRPCAddr)
	ls.Start(t)
	obs := harness.Observe(t, broker, cp.Dir, pool)
	gw := harness.NewGateway(t, bins.Path(t, "gateway"), token, harness.KeyEnv(t, key), policy.GRPCAddr,
		append(pt.Env(t, "gateway", "gateway"), "HANGAR_HEARTBEAT_INTERVAL=1s", "HANGAR_WORKER_ID=gw-sec")...)
	listenAll(gw.Service, "HANGAR_GATEWAY_GRPC_ADDR", gw.GRPCAddr)
	gw.Start(t)
	exec1 := harness.NewExecutor(t, bins.Path(t, "executor"), "exec-1", "", gw.GRPCAddr, ls.GRPCAddr,
		append(pt.Env(t, "executor", "exec-1"), "HANGAR_EXECUTOR_SLOTS=2", "HANGAR_EXECUTOR_RUNTIME=docker",
			"HANGAR_CANCEL_GRACE=1s", "HANGAR_WORKER_EXTRA_MOUNTS="+attackDir+":/attack:ro")...)
	exec1.Start(t)
	services := []*harness.Process{policy.Process, ls.Process, gw.Process, exec1.Process}
	waitExecutors(t, obs, "exec-1")
	for _, p := range services[:3] {
		if out := p.Output(); !strings.Contains(out, `"grpc_security":"mutual TLS"`) {
			t.Fatalf("%s does not serve mutual TLS:\n%s", p.Name, out)
		}
	}

	// The victim: prints its secret, then waits to be cancelled.
	victim := harness.Task(runnerImage, `echo "victim says $VICTIM_SECRET"`, "sleep 300")
	victim.Env = []harness.EnvVar{{Name: "VICTIM_SECRET", Value: victimSecret, Secret: true}}
	victimID := newRunID()
	follow := submitFollow(t, cp, ls.GRPCAddr, pool, victimID, victim, pt.OperatorArgs(t, "alice"))
	obs.WaitEvent(wait, "victim started", func(ev *eventv1.Event) bool { return ev.GetRunId() == victimID && ev.GetStarted() != nil })
	// The operator's live log is the masked one, over mutual TLS.
	follow.WaitOutput(regexp.MustCompile(`victim says \*+`), wait)

	insecureTLS := func(certFile, keyFile string) credentials.TransportCredentials {
		conf := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // an attacker trusts any server
		if certFile != "" {
			c, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				t.Fatal(err)
			}
			conf.Certificates = []tls.Certificate{c}
		}
		return credentials.NewTLS(conf)
	}
	otherExec1Cert, otherExec1Key := other.Issue(t, "executor", "exec-1")
	exec2Cert, exec2Key := pt.Issue(t, "executor", "exec-2")
	opCert, opKey := pt.Issue(t, "operator", "mallory")
	type attacker struct {
		name  string
		creds credentials.TransportCredentials
		// want: the code of each method's refusal, and words its message has.
		want map[string]codes.Code
		msg  map[string]string
	}
	handshake := map[string]codes.Code{"Attach": codes.Unavailable, "Ship": codes.Unavailable, "Tail": codes.Unavailable, "Evaluate": codes.Unavailable}
	attackers := []attacker{
		{"plaintext, no certificate", insecure.NewCredentials(), handshake, nil},
		{"TLS, no certificate", insecureTLS("", ""), handshake, nil},
		{"another CA's certificate for exec-1", insecureTLS(otherExec1Cert, otherExec1Key), handshake, nil},
		{"another executor's certificate (exec-2)", insecureTLS(exec2Cert, exec2Key),
			map[string]codes.Code{"Attach": codes.PermissionDenied, "Ship": codes.PermissionDenied, "Tail": codes.PermissionDenied, "Evaluate": codes.PermissionDenied},
			map[string]string{"Attach": `disagrees with the certificate's executor id "exec-2"`, "Ship": "no run credential", "Tail": "executor certificate", "Evaluate": "open to gateway"}},
		{"an operator's certificate", insecureTLS(opCert, opKey),
			map[string]codes.Code{"Attach": codes.PermissionDenied, "Ship": codes.PermissionDenied, "Tail": codes.OK, "Evaluate": codes.PermissionDenied},
			map[string]string{"Attach": "open to executor", "Ship": "open to executor", "Evaluate": "open to gateway"}},
	}
	targets := map[string]string{"Attach": gw.GRPCAddr, "Ship": ls.GRPCAddr, "Tail": ls.GRPCAddr, "Evaluate": policy.GRPCAddr}
	for _, a := range attackers {
		t.Run(a.name, func(t *testing.T) {
			for _, m := range []string{"Attach", "Ship", "Tail", "Evaluate"} {
				if m == "Tail" && a.want[m] == codes.OK {
					continue // operators may tail: that is their role
				}
				got, err := attack(targets[m], a.creds, m, victimID)
				if strings.Contains(string(got), victimSecret) {
					t.Errorf("%s: the secret reached the attacker", m)
				}
				if err == nil {
					t.Errorf("%s was accepted (%d bytes received)", m, len(got))
					continue
				}
				if status.Code(err) != a.want[m] || !strings.Contains(status.Convert(err).Message(), a.msg[m]) {
					t.Errorf("%s: %v, want %v containing %q", m, err, a.want[m], a.msg[m])
				}
			}
		})
	}

	// A run container tries the pool's ports at the Docker host.
	t.Run("run container", func(t *testing.T) {
		spec := harness.Task(runnerImage, "/attack/attacker")
		spec.Env = []harness.EnvVar{
			{Name: "ATTACK_PORTS", Value: strings.Join([]string{harness.Port(gw.GRPCAddr), harness.Port(ls.GRPCAddr), harness.Port(policy.GRPCAddr)}, ",")},
			{Name: "ATTACK_RUN_ID", Value: victimID},
		}
		runID := newRunID()
		sub := submitFollow(t, cp, ls.GRPCAddr, pool, runID, spec, pt.OperatorArgs(t, "alice"))
		fin := obs.WaitEvent(2*wait, "attack run finished", func(ev *eventv1.Event) bool { return ev.GetRunId() == runID && ev.GetFinished() != nil }).GetFinished()
		sub.WaitExit(time.Minute)
		if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED {
			t.Fatalf("attack run: %v\n%s", fin, sub.Output())
		}
		body, _, _ := s3.Get(t, fin.GetLogKey())
		log := string(body)
		attempts := regexp.MustCompile(`(?m)^ATTACK \S+ \S+ \S+ refused: `).FindAllString(log, -1)
		if strings.Contains(log, "ACCEPTED") || !strings.Contains(log, "ATTACK done") || len(attempts) < 3*2*4 {
			t.Errorf("the run container was not refused everywhere (%d refusals):\n%s", len(attempts), log)
		}
		if strings.Contains(log, victimSecret) {
			t.Error("the attacking run's log holds the victim's secret")
		}
		t.Logf("run container's attempts:\n%s", strings.Join(regexp.MustCompile(`(?m)^ATTACK .*$`).FindAllString(log, -1), "\n"))
	})

	if r := cp.Run(t, "run", "cancel", "--dir", cp.Dir, "--pool", pool, victimID); r.Code != 0 {
		t.Fatalf("cancel: %s", r)
	}
	fin := obs.WaitEvent(2*wait, "victim finished", func(ev *eventv1.Event) bool { return ev.GetRunId() == victimID && ev.GetFinished() != nil }).GetFinished()
	follow.WaitExit(time.Minute)
	if body, _, _ := s3.Get(t, fin.GetLogKey()); strings.Contains(string(body), victimSecret) || !strings.Contains(string(body), "victim says ") {
		log := string(body)
		t.Errorf("the victim's stored log is not its masked output:\n%s", log)
	}
	t.Run("the services refused loudly, and logged no secret", func(t *testing.T) {
		for _, p := range services {
			if strings.Contains(p.Output(), victimSecret) {
				t.Errorf("%s's own log holds the secret", p.Name)
			}
		}
		if !strings.Contains(gw.Output(), "refused an executor whose Hello disagrees with its certificate") {
			t.Error("the gateway did not log the Hello that contradicted its certificate")
		}
		if !strings.Contains(ls.Output(), "refused a Ship stream") {
			t.Error("logship did not log the refused Ship")
		}
	})
}

// listenAll makes a service listen on every interface at addr's port, as a
// deployment does; clients keep dialling addr.
func listenAll(s *harness.Service, variable, addr string) {
	s.Env = append(s.Env, variable+"=0.0.0.0:"+harness.Port(addr))
}

// submitFollow submits spec as runID and follows it with the operator's
// certificate (args).
func submitFollow(t *testing.T, cp *harness.ControlPlane, logship, pool, runID string, spec *harness.RunSpec, operator []string) *harness.Process {
	t.Helper()
	specFile := harness.WriteFile(t, t.TempDir(), "spec.json", spec.JSON())
	args := append([]string{"run", "submit", "--dir", cp.Dir, "--pool", pool, "--spec", specFile, "--run-id", runID,
		"--follow", "--logship", logship, "--timeout", "5m"}, operator...)
	return harness.Start(t, "submit-"+runID, nil, cp.Ctl, args...)
}

// attack makes one call of method as an attacker would and returns what it
// received (serialized) and the error.
func attack(addr string, creds credentials.TransportCredentials, method, runID string) ([]byte, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []byte
	keep := func(m proto.Message) { b, _ := proto.Marshal(m); got = append(got, b...) }
	switch method {
	case "Attach":
		st, err := workv1.NewWorkServiceClient(conn).Attach(ctx)
		if err != nil {
			return nil, err
		}
		_ = st.Send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Hello{Hello: &workv1.Hello{ExecutorId: "exec-1", Slots: 4}}})
		for {
			m, err := st.Recv()
			if err != nil {
				return got, err
			}
			keep(m)
			if len(got) > 0 {
				return got, nil
			}
		}
	case "Ship":
		st, err := logsv1.NewLogServiceClient(conn).Ship(ctx)
		if err != nil {
			return nil, err
		}
		_ = st.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Open{Open: &logsv1.Open{RunId: runID}}})
		m, err := st.Recv()
		if err != nil {
			return nil, err
		}
		keep(m)
		return got, nil
	case "Tail":
		st, err := logsv1.NewLogServiceClient(conn).Tail(ctx, &logsv1.TailRequest{RunId: runID})
		if err != nil {
			return nil, err
		}
		for {
			m, err := st.Recv()
			if err == io.EOF {
				return got, nil
			}
			if err != nil {
				return got, err
			}
			keep(m)
			if m.GetEnd() || len(got) > 0 {
				return got, nil
			}
		}
	default:
		r, err := policyv1.NewPolicyServiceClient(conn).Evaluate(ctx, &policyv1.EvaluateRequest{Run: &policyv1.RunInput{Id: runID}})
		if err != nil {
			return nil, err
		}
		keep(r)
		return got, nil
	}
}

// buildAttacker builds the attacker command (static) into a directory a run
// mounts at /attack.
func buildAttacker(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "attacker"), "./attacker")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the attacker: %v\n%s", err, out)
	}
	return dir
}
