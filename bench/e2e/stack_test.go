package e2e

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/platform/mqtttopic"
	"github.com/hangar-dev/hangar/platform/runenvelope"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
)

// What `hangarctl dev --keep` prints that the benchmarks need: the broker's
// address, and the follow-up command naming the control-plane directory, the
// pool and logship's address.
var (
	devBrokerLine = regexp.MustCompile(`embedded MQTT broker .* on (mqtts://\S+)`)
	devKeepLine   = regexp.MustCompile(`(?m)^\s*hangarctl run submit --dir (\S+) --pool (\S+) --spec \S+ --follow --logship (\S+)(?: \\\n\s*--tls-ca (\S+) --tls-cert (\S+) --tls-key (\S+))?\s*$`)
)

// devStack is one `hangarctl dev --keep --runtime docker` process, shared by
// every benchmark of the binary (started on first use, stopped by TestMain),
// and the control-plane side the benchmarks drive it with.
type devStack struct {
	dir      string // hangarctl dev --dir
	cpDir    string
	poolName string
	poolID   string
	broker   string
	logship  string
	// The operator's TLS files for logship (pool-internal mutual TLS).
	tlsCA, tlsCert, tlsKey string

	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}

	signKey ed25519.PrivateKey
	poolKey *rsa.PublicKey
	mq      mqtt.Client
	logConn *grpc.ClientConn
	logs    logsv1.LogServiceClient

	mu      sync.Mutex
	waiters map[string]chan *eventv1.Event
	// record, when set, sees every event of the pool (BenchmarkCost counts
	// final events with it).
	record func(*eventv1.Event)
}

var (
	stackOnce sync.Once
	theStack  *devStack
	// baseStack is the second stack of BenchmarkFirstOutput with
	// HANGAR_BENCH_BASELINE (see there).
	baseStack *devStack
	stackErr  error
	tmpRoot   string
)

// stack returns the shared stack, starting it on first use.
func stack(b *testing.B) *devStack {
	b.Helper()
	stackOnce.Do(func() {
		start := time.Now()
		theStack, stackErr = startStack()
		if stackErr == nil {
			fmt.Fprintf(os.Stderr, "bench: hangarctl dev stack up in %s (dir %s, pool %s, logship %s)\n",
				time.Since(start).Round(time.Millisecond), theStack.dir, theStack.poolName, theStack.logship)
		}
	})
	if stackErr != nil {
		b.Fatalf("starting the stack: %v", stackErr)
	}
	return theStack
}

func startStack() (*devStack, error) {
	ctl, err := hangarctl()
	if err != nil {
		return nil, err
	}
	return startStackWith(ctl, "dev")
}

// startStackWith starts `ctl dev` in tmpRoot/name (its output in
// tmpRoot/hangarctl-name.out).
func startStackWith(ctl, name string) (*devStack, error) {
	s := &devStack{dir: filepath.Join(tmpRoot, name), out: &syncBuffer{}, done: make(chan struct{}), waiters: map[string]chan *eventv1.Event{}}
	logFile, err := os.Create(filepath.Join(tmpRoot, "hangarctl-"+name+".out"))
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(ctl, "dev", "--keep", "--dir", s.dir, "--runtime", "docker")
	// Outside the repository: dev builds the run containers' relay from the
	// source it finds from its working directory up, else from where the
	// binary was built; from here, each build (HANGAR_BENCH_BASELINE's too)
	// runs its own relay.
	s.cmd.Dir = tmpRoot
	// The log benchmark stores the whole output: logship's size limit raised
	// (hangarctl dev passes HANGAR_LOG_MAX_BYTES on to logship).
	s.cmd.Env = append(os.Environ(), "HANGAR_LOG_MAX_BYTES="+strconv.FormatInt(logMaxBytes, 10))
	s.cmd.Stdout = io.MultiWriter(s.out, logFile)
	s.cmd.Stderr = s.cmd.Stdout
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start hangarctl dev: %w", err)
	}
	go func() {
		_ = s.cmd.Wait()
		logFile.Close()
		close(s.done)
	}()

	deadline := time.After(5 * time.Minute)
	for {
		if m := devKeepLine.FindStringSubmatch(s.out.String()); m != nil {
			s.cpDir, s.poolName, s.logship = m[1], m[2], m[3]
			s.tlsCA, s.tlsCert, s.tlsKey = m[4], m[5], m[6]
			break
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("hangarctl dev exited before the stack was up:\n%s", s.out.String())
		case <-deadline:
			s.stop()
			return nil, fmt.Errorf("hangarctl dev: stack not up after 5m:\n%s", s.out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	m := devBrokerLine.FindStringSubmatch(s.out.String())
	if m == nil {
		s.stop()
		return nil, fmt.Errorf("hangarctl dev does not print the broker address:\n%s", s.out.String())
	}
	s.broker = m[1]
	if err := s.connect(); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// connect reads the control plane's keys and the pool's record from the
// control-plane directory (files documented by `hangarctl ca init` and `pool
// create`), then connects to the broker as the control plane and to logship.
func (s *devStack) connect() error {
	var rec struct {
		ID             string `json:"id"`
		CertificatePEM string `json:"certificate_pem"`
	}
	raw, err := os.ReadFile(filepath.Join(s.cpDir, "pools", s.poolName+".json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, &rec); err != nil {
		return fmt.Errorf("pool record: %w", err)
	}
	s.poolID = rec.ID
	block, _ := pem.Decode([]byte(rec.CertificatePEM))
	if block == nil {
		return errors.New("pool record: no certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("pool key is %T, want RSA", cert.PublicKey)
	}
	s.poolKey = pub

	raw, err = os.ReadFile(filepath.Join(s.cpDir, "signing.key"))
	if err != nil {
		return err
	}
	if block, _ = pem.Decode(raw); block == nil {
		return errors.New("signing key: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	if s.signKey, ok = k.(ed25519.PrivateKey); !ok {
		return fmt.Errorf("signing key is %T, want Ed25519", k)
	}

	clientCert, err := tls.LoadX509KeyPair(filepath.Join(s.cpDir, "control-plane.crt"), filepath.Join(s.cpDir, "control-plane.key"))
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(filepath.Join(s.cpDir, "ca.crt"))
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return errors.New("ca.crt: no certificate")
	}
	u, err := url.Parse(s.broker)
	if err != nil {
		return err
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	opts := mqtt.NewClientOptions().
		AddBroker("tls://" + u.Host).
		SetClientID("bench-" + hex.EncodeToString(id[:])).
		SetTLSConfig(&tls.Config{Certificates: []tls.Certificate{clientCert}, RootCAs: roots, ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectTimeout(20 * time.Second)
	s.mq = mqtt.NewClient(opts)
	if tok := s.mq.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		return fmt.Errorf("connect to %s as the control plane: %v", s.broker, tok.Error())
	}
	if tok := s.mq.Subscribe(mqtttopic.Events(s.poolID), 1, s.onEvent); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		return fmt.Errorf("subscribe to the pool's events: %v", tok.Error())
	}

	creds := insecure.NewCredentials()
	if s.tlsCA != "" {
		tc, err := tlsconfig.ClientConfigFiles(s.tlsCA, s.tlsCert, s.tlsKey, "")
		if err != nil {
			return fmt.Errorf("logship TLS: %w", err)
		}
		creds = credentials.NewTLS(tc)
	}
	s.logConn, err = grpc.NewClient(s.logship, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	s.logs = logsv1.NewLogServiceClient(s.logConn)
	return nil
}

func (s *devStack) onEvent(_ mqtt.Client, m mqtt.Message) {
	ev := &eventv1.Event{}
	if proto.Unmarshal(m.Payload(), ev) != nil {
		return
	}
	s.mu.Lock()
	ch := s.waiters[ev.GetRunId()]
	record := s.record
	s.mu.Unlock()
	if record != nil {
		record(ev)
	}
	if ch != nil {
		select {
		case ch <- ev:
		default: // a run has a handful of events; the buffer holds them all
		}
	}
}

// stop interrupts hangarctl dev (it stops the stack in order) and waits for it.
func (s *devStack) stop() {
	if s.mq != nil {
		s.mq.Disconnect(100)
	}
	if s.logConn != nil {
		s.logConn.Close()
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		fmt.Fprintln(os.Stderr, "bench: hangarctl dev did not stop within 30s of SIGINT: killing it")
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// run is one run being followed.
type run struct {
	id      string
	payload []byte
	events  chan *eventv1.Event
}

// prepare seals a run for the pool and starts listening to its events; the
// benchmark times from publish.
func (s *devStack) prepare(b *testing.B, image string, commands ...string) *run {
	b.Helper()
	r := &run{id: newRunID(), events: make(chan *eventv1.Event, 64)}
	spec := &runv1.RunSpec{
		Type:        runv1.RunType_RUN_TYPE_TASK,
		Stack:       &runv1.Stack{Id: "stack-bench", Name: "bench"},
		Commit:      &runv1.Commit{Sha: strings.Repeat("0", 40), Branch: "main", Message: "bench", Author: "hangar-bench"},
		RunnerImage: image,
		Phases:      []*runv1.Phase{{Name: "perform", Commands: commands}},
	}
	var err error
	r.payload, err = runenvelope.Seal(runenvelope.SealParams{SigningKey: s.signKey, PoolKey: s.poolKey, RunID: r.id, PoolID: s.poolID, Spec: spec, TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	s.mu.Lock()
	s.waiters[r.id] = r.events
	s.mu.Unlock()
	return r
}

func (s *devStack) forget(r *run) {
	s.mu.Lock()
	delete(s.waiters, r.id)
	s.mu.Unlock()
}

// publish publishes the run's envelope (QoS 1) and returns once the broker has
// acknowledged it.
func (s *devStack) publish(r *run) error {
	tok := s.mq.Publish(mqtttopic.Runs(s.poolID), 1, false, r.payload)
	if !tok.WaitTimeout(30 * time.Second) {
		return errors.New("publish: no PUBACK within 30s")
	}
	return tok.Error()
}

// wait returns the run's first event matching pred, or an error naming the
// events seen if a final event or the timeout comes first.
func (r *run) wait(timeout time.Duration, what string, pred func(*eventv1.Event) bool) (*eventv1.Event, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var seen []string
	for {
		select {
		case ev := <-r.events:
			if pred(ev) {
				return ev, nil
			}
			seen = append(seen, describe(ev))
			if ev.GetFinished() != nil || ev.GetDenied() != nil || ev.GetRejected() != nil {
				return nil, fmt.Errorf("run %s: ended before %s: %s", r.id, what, strings.Join(seen, ", "))
			}
		case <-deadline.C:
			return nil, fmt.Errorf("run %s: no %s within %s (events: %s)", r.id, what, timeout, strings.Join(seen, ", "))
		}
	}
}

func isFinished(ev *eventv1.Event) bool { return ev.GetFinished() != nil }

// finished waits for the run's final event and requires a successful run.
func (r *run) finished(timeout time.Duration) (*eventv1.RunFinished, error) {
	ev, err := r.wait(timeout, "finished event", isFinished)
	if err != nil {
		return nil, err
	}
	fin := ev.GetFinished()
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED {
		return nil, fmt.Errorf("run %s: %s", r.id, describe(ev))
	}
	return fin, nil
}

var uploadedLine = regexp.MustCompile(`"bytes":(\d+)`)

// logshipUploaded waits until logship's own log (hangarctl dev writes each
// service's log to DIR/logs) says the run's final object is uploaded to S3,
// and returns its size. Only lines after offset are read.
func (s *devStack) logshipUploaded(runID string, offset int64, timeout time.Duration) (int64, error) {
	path := filepath.Join(s.dir, "logs", "logship.log")
	deadline := time.Now().Add(timeout)
	needle := `"run_id":"` + runID + `"`
	for {
		f, err := os.Open(path)
		if err != nil {
			return 0, err
		}
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return 0, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, `"msg":"run log uploaded"`) && strings.Contains(line, needle) {
				f.Close()
				m := uploadedLine.FindStringSubmatch(line)
				if m == nil {
					return 0, fmt.Errorf("logship's upload line has no size: %s", line)
				}
				var n int64
				fmt.Sscan(m[1], &n)
				return n, nil
			}
		}
		f.Close()
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("logship did not log the upload of run %s within %s (%s)", runID, timeout, path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logshipLogSize is the current size of logship's log, to read only what
// follows.
func (s *devStack) logshipLogSize() int64 {
	st, err := os.Stat(filepath.Join(s.dir, "logs", "logship.log"))
	if err != nil {
		return 0
	}
	return st.Size()
}

// dropStoredLog removes the run's objects from the dev S3 server's directory
// (objects are files named by the base64url of their key; an object
// completed from a multipart upload, as the final log is, keeps its bytes
// in a directory beside, .<name>.seg-<n>) so that repeated gigabyte runs do
// not fill the disk. Best effort: a different layout only means nothing is
// removed.
func (s *devStack) dropStoredLog(runID string) {
	dir := filepath.Join(s.dir, "data", "s3", "hangar-logs")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name, _, _ := strings.Cut(strings.TrimPrefix(e.Name(), "."), ".")
		k, err := base64.RawURLEncoding.DecodeString(name)
		if err == nil && strings.Contains(string(k), "/"+runID+"/") {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

func describe(ev *eventv1.Event) string {
	switch k := ev.GetKind().(type) {
	case *eventv1.Event_Received:
		return "received"
	case *eventv1.Event_Admitted:
		return "admitted"
	case *eventv1.Event_Denied:
		return fmt.Sprintf("denied %q", k.Denied.GetMessages())
	case *eventv1.Event_Started:
		return "started"
	case *eventv1.Event_Phase:
		return "phase " + k.Phase.GetPhase()
	case *eventv1.Event_Finished:
		return fmt.Sprintf("finished %s exit %d %q", k.Finished.GetOutcome(), k.Finished.GetExitCode(), k.Finished.GetReason())
	case *eventv1.Event_Rejected:
		return fmt.Sprintf("rejected %s %q", k.Rejected.GetReason(), k.Rejected.GetMessage())
	}
	return fmt.Sprintf("%T", ev.GetKind())
}

func newRunID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "bench-" + hex.EncodeToString(b[:])
}

// hangarctl builds cmd/hangarctl (GOWORK=off, as a user's go install would),
// or uses $HANGAR_E2E_BIN_DIR/hangarctl if it exists.
func hangarctl() (string, error) {
	if pre := os.Getenv("HANGAR_E2E_BIN_DIR"); pre != "" {
		p := filepath.Join(pre, "hangarctl")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	root, err := findRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(tmpRoot, "hangarctl")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = filepath.Join(root, "cmd", "hangarctl")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build hangarctl: %v\n%s", err, msg)
	}
	return out, nil
}

// findRoot walks up from the working directory to the directory holding go.work.
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the working directory: run the benchmarks from inside the repository")
		}
		dir = parent
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
