package harness

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// MosquittoBinary is where Debian's mosquitto package installs the broker.
const MosquittoBinary = "/usr/sbin/mosquitto"

// RequireOpenSSL fails the test, with the package to install, if openssl is missing.
func RequireOpenSSL(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is required by this test and is not installed: apt-get install openssl")
	}
	return p
}

// RequireMosquitto fails the test, with the package to install, if mosquitto is missing.
func RequireMosquitto(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(MosquittoBinary); err == nil {
		return MosquittoBinary
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	t.Fatalf("mosquitto is required by this test and is not installed (%s): apt-get install mosquitto", MosquittoBinary)
	return ""
}

// ControlPlane is a control-plane directory made by `hangarctl ca init`, and the
// hangarctl binary that works with it.
type ControlPlane struct {
	Dir string
	Ctl string
}

// NewControlPlane runs `hangarctl ca init` in a fresh directory.
func NewControlPlane(t testing.TB, hangarctl string) *ControlPlane {
	t.Helper()
	cp := &ControlPlane{Dir: filepath.Join(t.TempDir(), "control-plane"), Ctl: hangarctl}
	if r := cp.Run(t, "ca", "init", "--dir", cp.Dir); r.Code != 0 {
		t.Fatalf("hangarctl ca init: %s", r)
	}
	return cp
}

// Run runs hangarctl with args (60s at most).
func (cp *ControlPlane) Run(t testing.TB, args ...string) Result {
	t.Helper()
	return Run(t, 2*time.Minute, nil, cp.Ctl, args...)
}

// CAFile is the control plane's CA certificate.
func (cp *ControlPlane) CAFile() string { return filepath.Join(cp.Dir, "ca.crt") }

// CreatePool signs csrFile as pool name for broker and returns the token.
func (cp *ControlPlane) CreatePool(t testing.TB, name, csrFile, broker string) string {
	t.Helper()
	r := cp.Run(t, "pool", "create", "--dir", cp.Dir, "--name", name, "--csr", csrFile, "--broker", broker)
	if r.Code != 0 {
		t.Fatalf("hangarctl pool create %s: %s", name, r)
	}
	tok := strings.TrimSpace(r.Stdout)
	if tok == "" || strings.Contains(tok, "\n") {
		t.Fatalf("hangarctl pool create %s: stdout is not one token line:\n%s", name, r)
	}
	return tok
}

// OpenSSLKey makes an RSA-4096 key and CSR with the real openssl, as the docs
// tell operators to: openssl req -new -newkey rsa:4096 -nodes.
func OpenSSLKey(t testing.TB, dir string) (keyFile, csrFile string) {
	t.Helper()
	bin := RequireOpenSSL(t)
	keyFile, csrFile = filepath.Join(dir, "pool.key"), filepath.Join(dir, "pool.csr")
	r := Run(t, 2*time.Minute, nil, bin, "req", "-new", "-newkey", "rsa:4096", "-nodes",
		"-keyout", keyFile, "-out", csrFile, "-subj", "/CN=x")
	if r.Code != 0 {
		t.Fatalf("openssl req: %s", r)
	}
	return keyFile, csrFile
}

// Keygen makes a key and CSR with `hangarctl keygen` in dir.
func (cp *ControlPlane) Keygen(t testing.TB, dir string) (keyFile, csrFile string) {
	t.Helper()
	keyFile, csrFile = filepath.Join(dir, "pool.key"), filepath.Join(dir, "pool.csr")
	if r := cp.Run(t, "keygen", "--key", keyFile, "--csr", csrFile); r.Code != 0 {
		t.Fatalf("hangarctl keygen: %s", r)
	}
	return keyFile, csrFile
}

// Token is the decoded pool token (base64 of JSON), as documented.
type Token struct {
	Version            int    `json:"version"`
	Broker             string `json:"broker"`
	PoolID             string `json:"pool_id"`
	BrokerCAPEM        string `json:"broker_ca_pem"`
	CertificatePEM     string `json:"certificate_pem"`
	RunVerificationKey string `json:"run_verification_key"`
}

// DecodeToken decodes a pool token.
func DecodeToken(t testing.TB, token string) Token {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(token))
	if err != nil {
		t.Fatalf("pool token is not standard base64: %v", err)
	}
	var tok Token
	if err := json.Unmarshal(raw, &tok); err != nil {
		t.Fatalf("pool token is not JSON: %v", err)
	}
	return tok
}

// KeyEnv is the value of HANGAR_POOL_PRIVATE_KEY for a key file: base64 -w0.
func KeyEnv(t testing.TB, keyFile string) string {
	t.Helper()
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

var brokerListening = regexp.MustCompile(`broker listening on (mqtts://\S+)`)

// StartEmbeddedBroker runs `hangarctl broker` on a free loopback port and returns
// its address (mqtts://127.0.0.1:PORT) once it says it listens.
func (cp *ControlPlane) StartEmbeddedBroker(t testing.TB) (string, *Process) {
	t.Helper()
	addr := FreeAddr(t)
	p := Start(t, "broker", nil, cp.Ctl, "broker", "--dir", cp.Dir, "--listen", addr)
	url := p.WaitOutput(brokerListening, time.Minute)
	if url != "mqtts://"+addr {
		t.Fatalf("broker says it listens on %s, asked for %s", url, addr)
	}
	p.WaitTCP(addr, time.Minute)
	return url, p
}

// StartMosquitto writes the Mosquitto configuration with `hangarctl broker
// --mosquitto-config`, runs Debian's mosquitto with it on a free loopback port,
// and returns its address once it runs.
//
// Started as root, mosquitto switches to user mosquitto before it reads the key
// files, which are root's (mode 0600): as hangarctl and package mosquitto
// document, the configuration gets a `user root` line then.
func (cp *ControlPlane) StartMosquitto(t testing.TB) (string, *Process) {
	t.Helper()
	bin := RequireMosquitto(t)
	addr := FreeAddr(t)
	out := filepath.Join(t.TempDir(), "mosquitto")
	r := cp.Run(t, "broker", "--dir", cp.Dir, "--mosquitto-config", out, "--listen", addr)
	if r.Code != 0 {
		t.Fatalf("hangarctl broker --mosquitto-config: %s", r)
	}
	conf := filepath.Join(out, "mosquitto.conf")
	if !strings.Contains(r.Stdout, conf) {
		t.Fatalf("hangarctl broker --mosquitto-config does not name %s:\n%s", conf, r)
	}
	if os.Geteuid() == 0 {
		b, err := os.ReadFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?m)^user `).Match(b) {
			b = append([]byte("user root\n"), b...)
			if err := os.WriteFile(conf, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	p := Start(t, "mosquitto", nil, bin, "-c", conf)
	p.WaitOutput(regexp.MustCompile(`mosquitto version \S+ running`), time.Minute)
	p.WaitTCP(addr, time.Minute)
	return "mqtts://" + addr, p
}

// Policy is the policy service on fixed loopback ports. Process is the
// current process (set by Start).
type Policy struct {
	*Process
	Service             *Service
	GRPCAddr, DebugAddr string
}

// NewPolicy configures the policy service on free loopback ports with the
// Rego file policyFile ("" for no policy); extra entries (KEY=VALUE) are
// appended to its environment. It does not start it: see Start.
func NewPolicy(t testing.TB, bin, policyFile string, extraEnv ...string) *Policy {
	t.Helper()
	p := &Policy{GRPCAddr: FreeAddr(t), DebugAddr: FreeAddr(t)}
	env := append([]string{
		"HANGAR_POLICY_GRPC_ADDR=" + p.GRPCAddr,
		"HANGAR_POLICY_DEBUG_ADDR=" + p.DebugAddr,
		"HANGAR_RUN_INITIALIZATION_POLICY=" + policyFile,
	}, extraEnv...)
	p.Service = &Service{Name: "policy", Bin: bin, Env: env, ReadyURL: "http://" + p.DebugAddr + "/readyz"}
	return p
}

// Start starts the policy service (again) and waits for its /readyz.
func (p *Policy) Start(t testing.TB) *Policy {
	t.Helper()
	p.Process = p.Service.Start(t)
	return p
}

// StartPolicy is NewPolicy(...).Start(t).
func StartPolicy(t testing.TB, bin, policyFile string, extraEnv ...string) *Policy {
	t.Helper()
	return NewPolicy(t, bin, policyFile, extraEnv...).Start(t)
}

// Gateway is a gateway on fixed loopback ports, worker id and data directory
// (seen store, run store, events journal). Process is the current process
// (set by Start).
type Gateway struct {
	*Process
	Service                      *Service
	GRPCAddr, DebugAddr, DataDir string
}

// GatewayEnv is the environment of a gateway on free loopback ports with its own
// data directory; extra entries (KEY=VALUE) are appended.
func GatewayEnv(t testing.TB, token, keyB64, policyAddr string, extra ...string) (env []string, grpcAddr, debugAddr, dataDir string) {
	t.Helper()
	grpcAddr, debugAddr, dataDir = FreeAddr(t), FreeAddr(t), t.TempDir()
	env = append([]string{
		"HANGAR_TOKEN=" + token,
		"HANGAR_POOL_PRIVATE_KEY=" + keyB64,
		"HANGAR_POLICY_ADDR=" + policyAddr,
		"HANGAR_GATEWAY_GRPC_ADDR=" + grpcAddr,
		"HANGAR_GATEWAY_DEBUG_ADDR=" + debugAddr,
		"HANGAR_GATEWAY_DATA_DIR=" + dataDir,
	}, extra...)
	return env, grpcAddr, debugAddr, dataDir
}

// NewGateway configures a gateway (GatewayEnv). It does not start it: see
// Start. Its processes are named "gateway" unless Service.Name is changed
// before the first start.
func NewGateway(t testing.TB, bin, token, keyB64, policyAddr string, extra ...string) *Gateway {
	t.Helper()
	env, grpcAddr, debugAddr, dataDir := GatewayEnv(t, token, keyB64, policyAddr, extra...)
	g := &Gateway{GRPCAddr: grpcAddr, DebugAddr: debugAddr, DataDir: dataDir}
	g.Service = &Service{Name: "gateway", Bin: bin, Env: env, ReadyURL: "http://" + debugAddr + "/readyz"}
	return g
}

// Start starts the gateway (again, as a service manager would after a stop
// or a crash) and waits for its /readyz (connected to the broker).
func (g *Gateway) Start(t testing.TB) *Gateway {
	t.Helper()
	g.Process = g.Service.Start(t)
	return g
}

// StartGateway is NewGateway(...).Start(t).
func StartGateway(t testing.TB, bin, token, keyB64, policyAddr string, extra ...string) *Gateway {
	t.Helper()
	return NewGateway(t, bin, token, keyB64, policyAddr, extra...).Start(t)
}

// WriteFile writes content to name in dir and returns the path.
func WriteFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Spec is a run spec's JSON (as in examples/runs) for a task with these stack labels.
func Spec(stackName string, labels ...string) string {
	l, _ := json.Marshal(append([]string{}, labels...))
	return fmt.Sprintf(`{
  "type": "RUN_TYPE_TASK",
  "stack": {"id": "stack-%[1]s", "name": %[2]q, "labels": %[3]s},
  "commit": {"sha": "0000000000000000000000000000000000000000", "branch": "main", "message": "e2e", "author": "hangar-e2e"},
  "runner_image": "hangar/e2e-runner:whatever",
  "env": [{"name": "GREETING", "value": "hello"}],
  "phases": [{"name": "perform", "commands": ["echo \"$GREETING\""]}]
}
`, strings.ToLower(stackName), stackName, l)
}
