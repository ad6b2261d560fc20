// Package kubert is the executor's `kubernetes` runtime: each run is one pod
// in a configured namespace, on whatever node the cluster schedules it.
//
// The pod of a run (see pod.go):
//   - an emptyDir volume at /workspace holds the workspace for all phases;
//   - init container hangar-workspace (the runner image) extracts the
//     workspace, which the executor streams to its standard input (attach,
//     stdinOnce) as a tar archive: the runner image needs /bin/sh and tar;
//   - one init container per phase (phase-0, phase-1, ...), in order, each
//     `/bin/sh -c <phase script>` in /workspace/<project root>; init
//     containers run one after the other and the first one that fails ends
//     the pod (restartPolicy Never), so the cluster itself keeps the order
//     and the pod goes on without the executor;
//   - a main container hangar-done that ends at once, or, when the workspace
//     is to be handed off, waits until the executor has read it (an exec of
//     `tar -c`);
//   - the run's environment comes from a Secret of the same name (envFrom),
//     owned by the pod, so that it is deleted with it; the executor deletes
//     both at the run's end;
//   - labels hangar.dev/managed, hangar.dev/run-id, hangar.dev/executor-id
//     and hangar.dev/pool-id; the executor's own pod as owner when it runs in
//     the same namespace; activeDeadlineSeconds from the run timeout;
//     requests = limits from HANGAR_WORKER_MEMORY_MB / _MILLICPUS; the
//     security context of the Docker runtime (non-privileged, no privilege
//     escalation, capabilities dropped, seccomp RuntimeDefault); no service
//     account token.
//
// Each phase's output is read through the pod logs API (follow) and passed on
// to the run's log; stdout and stderr come merged, as Kubernetes keeps them,
// and are passed on as stdout. A phase's exit code and reason come from its
// container status: OOMKilled, an image that cannot be pulled, an eviction, a
// pod left unscheduled for the pending timeout, the pod's deadline become
// clear failures. A cancelled run's pod is deleted with the run's grace
// period (the kubelet sends SIGTERM, then SIGKILL).
package kubert

import (
	"archive/tar"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"

	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
	"github.com/hangar-dev/hangar/services/executor/internal/wsarchive"
)

const (
	// cleanupTimeout bounds the deletion of a run's pod and Secret, on a
	// fresh context after the run's own has ended (plus the grace period).
	cleanupTimeout = 60 * time.Second
	// DefaultPendingTimeout is how long a pod may stay unschedulable.
	DefaultPendingTimeout = 10 * time.Minute
)

// Options configure the runtime.
type Options struct {
	// Client talks to the API server; Config is the same connection's
	// configuration, used for attach and exec.
	Client kubernetes.Interface
	Config *rest.Config
	// Namespace of the runs' pods and Secrets (HANGAR_KUBE_NAMESPACE).
	Namespace string
	// ExecutorID names this executor in the labels; required.
	ExecutorID string
	// PoolID names the pool in the labels when the job does not
	// (runner.Job.PoolID).
	PoolID string
	// PullPolicy of the runner image (HANGAR_KUBE_IMAGE_PULL_POLICY,
	// default IfNotPresent) and PullSecrets, the names of
	// kubernetes.io/dockerconfigjson Secrets of the namespace for private
	// registries (HANGAR_KUBE_IMAGE_PULL_SECRETS).
	PullPolicy  corev1.PullPolicy
	PullSecrets []string
	// ServiceAccount of the runs' pods ("" : the namespace's default); its
	// token is never mounted.
	ServiceAccount string
	// Memory (bytes) and MilliCPUs are each container's requests and limits
	// (HANGAR_WORKER_MEMORY_MB, HANGAR_WORKER_MILLICPUS); 0: none.
	Memory, MilliCPUs int64
	// RunTimeout is the executor's run timeout: the pod's
	// activeDeadlineSeconds is the run's timeout (the shorter of this and
	// the spec's) plus DeadlineMargin, so that a pod whose executor is gone
	// ends; a run whose pod reaches it is reported timed out.
	RunTimeout time.Duration
	// DeadlineMargin is added to the run's timeout for the pod's
	// activeDeadlineSeconds (0: 2 minutes): the executor stops a run at its
	// timeout itself; the deadline bounds a pod whose executor is gone.
	DeadlineMargin time.Duration
	// PendingTimeout is how long a pod may stay unschedulable before its run
	// fails (HANGAR_KUBE_PENDING_TIMEOUT, default 10m).
	PendingTimeout time.Duration
	// OwnerName and OwnerUID name the executor's own pod (downward API):
	// when it is in Namespace, it owns the runs' pods.
	OwnerName, OwnerUID, OwnerNamespace string
	// Registry receives the runtime's metrics; nil: not registered.
	Registry prometheus.Registerer
	// Logger receives the runtime's own diagnostics (never a run's output
	// or environment); nil discards them.
	Logger *slog.Logger
}

// Runtime runs jobs as pods. It implements runner.Runtime and is safe for
// concurrent use.
type Runtime struct {
	opts    Options
	log     *slog.Logger
	pods    typedcorev1.PodInterface
	secrets typedcorev1.SecretInterface
	owner   *metav1.OwnerReference

	pendingGauge prometheus.Gauge
	mu           sync.Mutex
	pendingRuns  map[string]bool
}

var _ runner.Runtime = (*Runtime)(nil)

// New returns a runtime. It checks the options but does not contact the
// API server (see Ping).
func New(opts Options) (*Runtime, error) {
	switch {
	case opts.Client == nil || opts.Config == nil:
		return nil, errors.New("kubernetes runtime: no client")
	case opts.ExecutorID == "":
		return nil, errors.New("kubernetes runtime: empty executor id")
	case opts.Namespace == "":
		return nil, errors.New("kubernetes runtime: empty namespace")
	case opts.Memory < 0 || opts.MilliCPUs < 0:
		return nil, errors.New("kubernetes runtime: negative memory or CPU limit")
	case opts.DeadlineMargin < 0:
		return nil, errors.New("kubernetes runtime: negative deadline margin")
	}
	if opts.DeadlineMargin == 0 {
		opts.DeadlineMargin = defaultDeadlineMargin
	}
	if opts.PullPolicy == "" {
		opts.PullPolicy = corev1.PullIfNotPresent
	}
	if opts.PendingTimeout == 0 {
		opts.PendingTimeout = DefaultPendingTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Runtime{
		opts: opts, log: log,
		pods:        opts.Client.CoreV1().Pods(opts.Namespace),
		secrets:     opts.Client.CoreV1().Secrets(opts.Namespace),
		pendingRuns: map[string]bool{},
		pendingGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hangar_executor_kube_pending_pods",
			Help: "Runs of this executor whose pod waits for a node or resources (Kubernetes runtime): queued capacity, for an autoscaler.",
		}),
	}
	if opts.OwnerNamespace == "" || opts.OwnerNamespace == opts.Namespace {
		r.owner = ownerReference(opts.OwnerName, opts.OwnerUID)
	}
	if opts.Registry != nil {
		if err := opts.Registry.Register(r.pendingGauge); err != nil {
			return nil, fmt.Errorf("kubernetes runtime: register metrics: %w", err)
		}
	}
	return r, nil
}

// Ping checks that the API server answers and that the namespace exists.
func (r *Runtime) Ping(ctx context.Context) error {
	if _, err := r.opts.Client.CoreV1().Namespaces().Get(ctx, r.opts.Namespace, metav1.GetOptions{}); err != nil {
		if apierrors.IsForbidden(err) {
			// A Role limited to the namespace cannot read the namespace
			// object: listing pods there is what the runtime needs.
			_, err = r.pods.List(ctx, metav1.ListOptions{Limit: 1})
		}
		if err != nil {
			return fmt.Errorf("kubernetes API server: namespace %s: %w", r.opts.Namespace, err)
		}
	}
	return nil
}

// selector selects what this executor created; runID narrows it to one run.
func (r *Runtime) selector(runID ...string) string {
	set := labels.Set{LabelManaged: "true", LabelExecutorID: labelValue(r.opts.ExecutorID)}
	for _, id := range runID {
		set[LabelRunID] = labelValue(id)
	}
	return labels.SelectorFromSet(set).String()
}

// mine reports whether an object carries this executor's full id (the label
// may be a shortened digest form).
func (r *Runtime) mine(meta metav1.Object) bool {
	return meta.GetAnnotations()[AnnotationExecutorID] == r.opts.ExecutorID
}

// Reap deletes every pod this executor created (labels and annotation
// naming its executor id; another executor's are never touched), except
// those of the runs in keep (re-adopted), their Secrets going with them
// (owner references), and returns the ids of their runs, sorted. Call it at
// start, once the runs to re-adopt are known.
func (r *Runtime) Reap(ctx context.Context, keep ...string) ([]string, error) {
	runs := map[string]bool{}
	var errs []error
	pods, err := r.pods.List(ctx, metav1.ListOptions{LabelSelector: r.selector()})
	if err != nil {
		return nil, fmt.Errorf("reap: list pods: %w", err)
	}
	for _, p := range pods.Items {
		if !r.mine(&p) || slices.Contains(keep, p.Annotations[AnnotationRunID]) {
			continue
		}
		runs[p.Annotations[AnnotationRunID]] = true
		if err := r.pods.Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: p.Spec.TerminationGracePeriodSeconds}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("reap: delete pod %s: %w", p.Name, err))
		}
	}
	delete(runs, "")
	ids := make([]string, 0, len(runs))
	for id := range runs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if len(ids) > 0 {
		r.log.Info("reaped pods of earlier runs", "run_ids", ids)
	}
	return ids, errors.Join(errs...)
}

var _ runner.Adopter = (*Runtime)(nil)

// Adoptable reports whether phase i of a run this executor started can be
// followed again after a restart: its pod is there, not being deleted, and
// has that phase (running, waiting for its turn, or ended: the pod keeps the
// container's log and status). It returns the run's environment, read back
// from the run's Secret.
func (r *Runtime) Adoptable(ctx context.Context, runID string, phase int) ([]string, error) {
	name := podName(runID)
	pod, err := r.pods.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("the run's pod: %w", err)
	}
	switch {
	case !r.mine(pod) || pod.Annotations[AnnotationRunID] != runID:
		return nil, fmt.Errorf("pod %s is not this executor's pod of run %s", name, runID)
	case pod.DeletionTimestamp != nil:
		return nil, fmt.Errorf("the run's pod %s is being deleted", name)
	case containerStatus(pod, phaseContainer(phase)) == nil && !hasContainer(pod, phaseContainer(phase)):
		return nil, fmt.Errorf("the run's pod has no phase %d", phase)
	}
	sec, err := r.secrets.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("the run's environment (secret %s): %w", name, err)
	}
	env := make([]string, 0, len(sec.Data))
	for k, v := range sec.Data {
		env = append(env, k+"="+string(v))
	}
	slices.Sort(env)
	return env, nil
}

func hasContainer(pod *corev1.Pod, name string) bool {
	for _, c := range pod.Spec.InitContainers {
		if c.Name == name {
			return true
		}
	}
	return false
}

// validRunID reports whether id follows run.proto's run id syntax.
func validRunID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for _, c := range []byte(id) {
		if !(isAlnum(c) || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Open checks the job and returns its session; it creates nothing. The
// pod's containers are all the job's selected phases (runner.Selected).
func (r *Runtime) Open(job *runner.Job) (runner.Session, error) {
	if !validRunID(job.RunID) {
		return nil, fmt.Errorf("invalid run id %q", job.RunID)
	}
	if job.Spec.GetRunnerImage() == "" {
		return nil, errors.New("no runner image")
	}
	workdir, err := workingDir(job.Spec.GetSource().GetProjectRoot())
	if err != nil {
		return nil, err
	}
	timeout := r.opts.RunTimeout
	if s := time.Duration(job.Spec.GetTimeoutSeconds()) * time.Second; s > 0 && (timeout == 0 || s < timeout) {
		timeout = s
	}
	spec := &podSpec{
		Namespace: r.opts.Namespace, Name: podName(job.RunID), RunID: job.RunID,
		ExecutorID: r.opts.ExecutorID, PoolID: cmp.Or(job.PoolID, r.opts.PoolID),
		Image: job.Spec.GetRunnerImage(), Workdir: workdir, Phases: runner.Selected(job),
		Hold: job.ExportTo != nil, Grace: job.StopGrace, Deadline: timeout, DeadlineMargin: r.opts.DeadlineMargin,
		Memory: r.opts.Memory, MilliCPUs: r.opts.MilliCPUs,
		PullPolicy: r.opts.PullPolicy, PullSecrets: r.opts.PullSecrets,
		ServiceAccount: r.opts.ServiceAccount, Owner: r.owner,
	}
	return &run{r: r, job: job, spec: spec, log: r.log.With("run_id", job.RunID, "pod", spec.Name)}, nil
}

// run is the session of one job.
type run struct {
	r         *Runtime
	job       *runner.Job
	spec      *podSpec
	log       *slog.Logger
	created   bool
	track     *tracker
	stopTrack context.CancelFunc
}

var _ runner.Session = (*run)(nil)

// Prepare creates the run's pod and Secret and streams the workspace into
// it. While the pod waits for a node or resources, the run counts as pending
// (hangar_executor_kube_pending_pods).
func (rn *run) Prepare(ctx context.Context) error {
	if err := rn.create(ctx); err != nil {
		return err
	}
	rn.setPending(true)
	defer rn.setPending(false)
	if err := rn.waitStarted(ctx, copyContainer); err != nil {
		return rn.waitError(err, "before the workspace was copied")
	}
	rn.setPending(false)
	if err := rn.copyWorkspace(ctx); err != nil {
		return err
	}
	end, err := rn.waitTerminated(ctx, copyContainer)
	if err != nil {
		return rn.waitError(err, "while copying the workspace")
	}
	if end.ExitCode != 0 {
		return fmt.Errorf("extracting the workspace in the pod failed (tar exited with code %d, %s): the runner image needs /bin/sh and tar", end.ExitCode, end.Reason)
	}
	return nil
}

// RunPhase passes phase i's output on as its container runs (the pod runs
// the phases in order by itself) and returns its exit. A container killed for
// lack of memory, an image that cannot be pulled, an eviction, the pod's
// deadline or its deletion by someone else end the phase with an error
// naming it. With job.Adopt and i == Adopt.Phase, the output that logship
// already stores (Adopt.Stored - Adopt.Base bytes of this phase) is skipped.
func (rn *run) RunPhase(ctx context.Context, i int, p *runv1.Phase, out runner.Output) (runner.Exit, error) {
	if rn.track == nil {
		if err := rn.attach(ctx); err != nil {
			return runner.Exit{Code: -1}, err
		}
	}
	name := phaseContainer(i)
	if err := rn.waitStarted(ctx, name); err != nil {
		if ctx.Err() != nil {
			return runner.Exit{Code: rn.stop(), Stopped: true}, nil
		}
		return runner.Exit{Code: -1}, rn.waitError(err, "before it started")
	}
	var skip uint64
	if a := rn.job.Adopt; a != nil && i == a.Phase && a.Stored > a.Base {
		skip = a.Stored - a.Base
	}
	rn.follow(ctx, name, &skipWriter{w: orDiscard(out.Stdout), skip: skip})
	end, err := rn.waitTerminated(ctx, name)
	if err != nil {
		if ctx.Err() != nil {
			return runner.Exit{Code: rn.stop(), Stopped: true}, nil
		}
		return runner.Exit{Code: -1}, rn.waitError(err, "while it ran")
	}
	if reason := phaseEnd(p.GetName(), end, rn.spec.Memory); reason != "" && end.Reason == "OOMKilled" {
		return runner.Exit{Code: int(end.ExitCode)}, errors.New(reason)
	}
	return runner.Exit{Code: int(end.ExitCode), Signal: syscall.Signal(end.Signal)}, nil
}

// Export writes the pod's workspace to w.
func (rn *run) Export(ctx context.Context, w io.Writer) error {
	if err := rn.waitStarted(ctx, holdContainer); err != nil {
		return rn.waitError(err, "before the export")
	}
	return rn.exportWorkspace(ctx, w)
}

// Close deletes the run's pod (with the grace period) and Secret.
func (rn *run) Close() { rn.cleanup() }

// attach follows the pod of an adopted run, which an earlier life of this
// executor created.
func (rn *run) attach(ctx context.Context) error {
	pod, err := rn.r.pods.Get(ctx, rn.spec.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("find the run's pod: %w", err)
	}
	if !rn.r.mine(pod) {
		return fmt.Errorf("pod %s belongs to executor %q", pod.Name, pod.Annotations[AnnotationExecutorID])
	}
	rn.created = true
	tctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	rn.track, rn.stopTrack = newTracker(rn.r.pods, pod), cancel
	go rn.track.run(tctx)
	return nil
}

// waitError words an error met while waiting on the pod.
func (rn *run) waitError(err error, when string) error {
	var pp *podProblem
	if errors.As(err, &pp) {
		return pp
	}
	return fmt.Errorf("%s: %w", when, err)
}

// skipWriter drops the first skip bytes written to it.
type skipWriter struct {
	w    io.Writer
	skip uint64
}

func (s *skipWriter) Write(p []byte) (int, error) {
	n := len(p)
	if s.skip > 0 {
		d := min(s.skip, uint64(len(p)))
		s.skip -= d
		p = p[d:]
	}
	if len(p) == 0 {
		return n, nil
	}
	if _, err := s.w.Write(p); err != nil {
		return 0, err
	}
	return n, nil
}

// create creates the run's pod, then its Secret owned by the pod (the first
// phase reads it only after the workspace is copied), replacing those of an
// earlier attempt of the same run by this executor. The executor's Role
// needs no read access to Secrets.
func (rn *run) create(ctx context.Context) error {
	r := rn.r
	for _, del := range []func() error{
		func() error {
			return r.pods.Delete(ctx, rn.spec.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
		},
		func() error { return r.secrets.Delete(ctx, rn.spec.Name, metav1.DeleteOptions{}) },
	} {
		if err := del(); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("remove the stale pod of an earlier attempt: %w", err)
		}
	}
	if err := waitGone(ctx, r.pods, rn.spec.Name); err != nil {
		return fmt.Errorf("remove the stale pod of an earlier attempt: %w", err)
	}
	pod, err := r.pods.Create(ctx, rn.spec.pod(), metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create the run's pod: %w", err)
	}
	rn.created = true
	sec := rn.spec.secret(rn.job.Env)
	sec.OwnerReferences = []metav1.OwnerReference{ownedBy(pod)}
	if _, err := r.secrets.Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create the run's secret: %w", err)
	}
	tctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	rn.track, rn.stopTrack = newTracker(r.pods, pod), cancel
	go rn.track.run(tctx)
	return nil
}

// waitStarted waits until the container runs or has run.
func (rn *run) waitStarted(ctx context.Context, name string) error {
	return rn.waitPod(ctx, func(pod *corev1.Pod) bool { return started(pod, name) })
}

// waitTerminated waits for the container's end.
func (rn *run) waitTerminated(ctx context.Context, name string) (*corev1.ContainerStateTerminated, error) {
	var end *corev1.ContainerStateTerminated
	err := rn.waitPod(ctx, func(pod *corev1.Pod) bool {
		end = terminated(pod, name)
		return end != nil
	})
	return end, err
}

// waitPod waits until cond holds, a pod problem ends the run, the pod is
// gone, or ctx ends. While it waits, an unschedulable pod is checked
// against the pending timeout.
func (rn *run) waitPod(ctx context.Context, cond func(*corev1.Pod) bool) error {
	var prob *podProblem
	check := func(pod *corev1.Pod, gone bool) bool {
		// An eviction or the deadline wins over a container that ended
		// at the same moment: it was killed for it.
		prob = problem(pod, time.Now(), rn.r.opts.PendingTimeout)
		if prob != nil && prob.final {
			return true
		}
		if pod != nil && cond(pod) {
			prob = nil
			return true
		}
		return prob != nil
	}
	tick := time.NewTicker(5 * time.Second) // re-checks the pending timeout
	defer tick.Stop()
	for {
		wctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-tick.C:
				cancel()
			case <-wctx.Done():
			}
		}()
		err := rn.track.wait(wctx, check)
		cancel()
		switch {
		case prob != nil:
			return prob
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return context.Cause(ctx)
		case errors.Is(err, errPodGone):
			return err
		}
	}
}

// follow passes the container's output on to w until it ends.
func (rn *run) follow(ctx context.Context, name string, w io.Writer) {
	stream, err := rn.r.pods.GetLogs(rn.spec.Name, &corev1.PodLogOptions{Container: name, Follow: true}).Stream(ctx)
	if err != nil {
		if ctx.Err() == nil {
			rn.log.Warn("reading a phase's output failed", "container", name, "err", err)
		}
		return
	}
	defer stream.Close()
	if _, err := io.Copy(w, stream); err != nil && ctx.Err() == nil {
		rn.log.Warn("a phase's output stream ended with an error", "container", name, "err", err)
	}
}

// copyWorkspace streams the job's workspace (or, without one, the project
// root's directories) as a tar archive to the copy container's standard
// input; the container extracts it into the volume.
func (rn *run) copyWorkspace(ctx context.Context) error {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(rn.writeWorkspace(pw))
	}()
	defer pr.Close()
	err := rn.stream(ctx, "attach", &corev1.PodAttachOptions{Container: copyContainer, Stdin: true, Stdout: true, Stderr: true},
		remotecommand.StreamOptions{Stdin: pr, Stdout: orDiscard(rn.job.Stderr), Stderr: orDiscard(rn.job.Stderr)})
	if err != nil {
		return fmt.Errorf("copy the workspace into the pod: %w", err)
	}
	return nil
}

func (rn *run) writeWorkspace(w io.Writer) error {
	if rn.job.Workspace != "" {
		return wsarchive.Write(w, rn.job.Workspace)
	}
	tw := tar.NewWriter(w)
	name := ""
	for part := range strings.SplitSeq(strings.TrimPrefix(rn.spec.Workdir, workspaceDir), "/") {
		if part == "" {
			continue
		}
		name = path.Join(name, part)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: time.Now()}); err != nil {
			return err
		}
	}
	return tw.Close()
}

// exportWorkspace writes the pod's workspace as a tar archive to w, read
// with an exec of tar in the main container.
func (rn *run) exportWorkspace(ctx context.Context, w io.Writer) error {
	var errOut strings.Builder
	err := rn.stream(ctx, "exec", &corev1.PodExecOptions{
		Container: holdContainer, Command: []string{"tar", "-cf", "-", "-C", workspaceDir, "."}, Stdout: true, Stderr: true,
	}, remotecommand.StreamOptions{Stdout: w, Stderr: &limitWriter{b: &errOut, n: 4096}})
	if err != nil {
		return fmt.Errorf("export the workspace from the pod: %w (%s)", err, strings.TrimSpace(errOut.String()))
	}
	return nil
}

// stream runs an attach or exec on the run's pod: WebSocket first, SPDY for
// API servers that do not upgrade to it.
func (rn *run) stream(ctx context.Context, sub string, params runtime.Object, so remotecommand.StreamOptions) error {
	req := rn.r.opts.Client.CoreV1().RESTClient().Post().Resource("pods").
		Namespace(rn.spec.Namespace).Name(rn.spec.Name).SubResource(sub).
		VersionedParams(params, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(rn.r.opts.Config, http.MethodGet, req.URL().String())
	if err != nil {
		return fmt.Errorf("%s: %w", sub, err)
	}
	spdy, err := remotecommand.NewSPDYExecutor(rn.r.opts.Config, http.MethodPost, req.URL())
	if err != nil {
		return fmt.Errorf("%s: %w", sub, err)
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", sub, err)
	}
	if err := ex.StreamWithContext(ctx, so); err != nil {
		return fmt.Errorf("%s: %w", sub, err)
	}
	return nil
}

// stop deletes the pod with the run's grace period and returns the exit
// code of the container that was running, -1 if unknown.
func (rn *run) stop() int {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout+rn.job.StopGrace)
	defer cancel()
	grace := int64(graceSeconds(rn.job.StopGrace))
	if err := rn.r.pods.Delete(ctx, rn.spec.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil && !apierrors.IsNotFound(err) {
		rn.log.Warn("delete the run's pod", "err", err)
		return -1
	}
	code := -1
	if rn.track == nil {
		return code
	}
	_ = rn.track.wait(ctx, func(pod *corev1.Pod, gone bool) bool {
		for i := len(rn.spec.Phases) - 1; i >= 0; i-- {
			if t := terminated(pod, phaseContainer(i)); t != nil {
				code = int(t.ExitCode)
				break
			}
		}
		return gone
	})
	return code
}

// cleanup deletes the run's pod and Secret on a fresh context.
func (rn *run) cleanup() {
	if rn.stopTrack != nil {
		defer rn.stopTrack()
	}
	if !rn.created {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout+rn.job.StopGrace)
	defer cancel()
	grace := int64(graceSeconds(rn.job.StopGrace))
	if err := rn.r.pods.Delete(ctx, rn.spec.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil && !apierrors.IsNotFound(err) {
		rn.log.Error("delete the run's pod", "err", err)
	}
	if err := rn.r.secrets.Delete(ctx, rn.spec.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		rn.log.Error("delete the run's secret", "err", err)
	}
	if err := waitGone(ctx, rn.r.pods, rn.spec.Name); err != nil {
		rn.log.Warn("the run's pod is not gone yet", "err", err)
	}
}

// waitGone waits until the named pod no longer exists.
func waitGone(ctx context.Context, pods typedcorev1.PodInterface, name string) error {
	for {
		_, err := pods.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func (rn *run) setPending(p bool) {
	r := rn.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pendingRuns[rn.job.RunID] == p {
		return
	}
	if p {
		r.pendingRuns[rn.job.RunID] = true
		r.pendingGauge.Inc()
	} else {
		delete(r.pendingRuns, rn.job.RunID)
		r.pendingGauge.Dec()
	}
}

// PendingRuns is the number of runs whose pod waits for a node or resources.
func (r *Runtime) PendingRuns() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pendingRuns)
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

type limitWriter struct {
	b *strings.Builder
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// Connect returns the API server connection: in-cluster (the pod's service
// account) when kubeconfig is "", else from that kubeconfig file.
func Connect(kubeconfig string) (*rest.Config, kubernetes.Interface, error) {
	var rc *rest.Config
	var err error
	if kubeconfig == "" {
		rc, err = rest.InClusterConfig()
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	rc.UserAgent = "hangar-executor"
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return rc, cs, nil
}
