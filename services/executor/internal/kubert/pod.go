package kubert

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
)

// Labels and annotations of everything the runtime creates. Label values are
// limited to 63 characters of [A-Za-z0-9_.-]: ids that do not fit are
// shortened with a digest (labelValue); the annotations hold them whole.
const (
	LabelManaged    = "hangar.dev/managed"
	LabelRunID      = "hangar.dev/run-id"
	LabelExecutorID = "hangar.dev/executor-id"
	LabelPoolID     = "hangar.dev/pool-id"
	AnnotationRunID = "hangar.dev/run-id"
	// AnnotationExecutorID holds the executor id unshortened.
	AnnotationExecutorID = "hangar.dev/executor-id"
)

const (
	// workspaceDir is where the run's emptyDir volume is mounted.
	workspaceDir = "/workspace"
	// copyContainer is the init container that receives the workspace on
	// its standard input (tar) before the phases run.
	copyContainer = "hangar-workspace"
	// holdContainer is the main container: it keeps the pod (and the
	// workspace) alive after the phases for an export, or ends at once.
	holdContainer   = "hangar-done"
	workspaceVolume = "workspace"
	// defaultDeadlineMargin is added to the run timeout for the pod's
	// activeDeadlineSeconds (Options.DeadlineMargin): the executor stops a
	// run itself at its timeout; the deadline only bounds a pod whose
	// executor is gone.
	defaultDeadlineMargin = 2 * time.Minute
)

// phaseContainer names the container of phase i: container names are DNS
// labels, phase names are free text (the phase name is in the annotations).
func phaseContainer(i int) string { return fmt.Sprintf("phase-%d", i) }

// podSpec is what a run's pod is built from.
type podSpec struct {
	Namespace  string
	Name       string // pod name (also the Secret's)
	RunID      string
	ExecutorID string
	PoolID     string
	Image      string
	Workdir    string // /workspace/<project root>
	Phases     []*runv1.Phase
	// Hold keeps the main container running after the phases, for an
	// export of the workspace (runner.Job.AfterPhases).
	Hold           bool
	Grace          time.Duration
	Deadline       time.Duration // the run timeout; 0: no activeDeadlineSeconds
	DeadlineMargin time.Duration // added to Deadline for activeDeadlineSeconds
	Memory         int64         // bytes, requests = limits; 0: none
	MilliCPUs      int64         // requests = limits; 0: none
	PullPolicy     corev1.PullPolicy
	PullSecrets    []string
	ServiceAccount string // "" : the namespace's default, its token never mounted
	Owner          *metav1.OwnerReference
}

var dnsUnsafe = regexp.MustCompile(`[^a-z0-9-]+`)

// podName returns a DNS-1123 name for a run's pod: "hangar-run-" and the
// run id lowercased, other characters replaced, with a digest of the exact
// id so that two ids differing only in case or punctuation never collide.
func podName(runID string) string {
	sum := sha256.Sum256([]byte(runID))
	base := strings.Trim(dnsUnsafe.ReplaceAllString(strings.ToLower(runID), "-"), "-")
	if len(base) > 36 {
		base = strings.TrimRight(base[:36], "-")
	}
	if base == "" {
		return "hangar-run-" + hex.EncodeToString(sum[:5])
	}
	return "hangar-run-" + base + "-" + hex.EncodeToString(sum[:5])
}

var labelUnsafe = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// labelValue returns v as a valid label value: v itself when it is one,
// else a cleaned prefix and a digest of v.
func labelValue(v string) string {
	if len(v) <= 63 && !labelUnsafe.MatchString(v) && (v == "" || isAlnum(v[0]) && isAlnum(v[len(v)-1])) {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	clean := strings.Trim(labelUnsafe.ReplaceAllString(v, "_"), "_.-")
	if len(clean) > 46 {
		clean = clean[:46]
	}
	clean = strings.Trim(clean, "_.-")
	if clean == "" {
		return "h" + hex.EncodeToString(sum[:8])
	}
	return clean + "-" + hex.EncodeToString(sum[:8])
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func (s *podSpec) labels() map[string]string {
	l := map[string]string{
		LabelManaged:    "true",
		LabelRunID:      labelValue(s.RunID),
		LabelExecutorID: labelValue(s.ExecutorID),
	}
	if s.PoolID != "" {
		l[LabelPoolID] = labelValue(s.PoolID)
	}
	return l
}

func (s *podSpec) annotations() map[string]string {
	a := map[string]string{AnnotationRunID: s.RunID, AnnotationExecutorID: s.ExecutorID}
	for i, p := range s.Phases {
		a["hangar.dev/"+phaseContainer(i)] = p.GetName()
	}
	return a
}

// secret is the run's environment: every variable of runner.Job.Env, read by
// the phase containers through envFrom. It is owned by the pod (set once the
// pod exists) and deleted with it.
func (s *podSpec) secret(env []string) *corev1.Secret {
	data := map[string][]byte{}
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		if name != "" {
			data[name] = []byte(value)
		}
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: s.Name, Namespace: s.Namespace, Labels: s.labels(),
			Annotations: map[string]string{AnnotationRunID: s.RunID, AnnotationExecutorID: s.ExecutorID},
		},
		Type:      corev1.SecretTypeOpaque,
		Immutable: ptr(true),
		Data:      data,
	}
}

// ownedBy returns the reference that makes a pod own the run's Secret.
func ownedBy(pod *corev1.Pod) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID}
}

// pod builds the run's pod (see the package documentation).
func (s *podSpec) pod() *corev1.Pod {
	res := corev1.ResourceRequirements{}
	if s.Memory > 0 || s.MilliCPUs > 0 {
		res.Limits, res.Requests = corev1.ResourceList{}, corev1.ResourceList{}
		if s.Memory > 0 {
			q := *resource.NewQuantity(s.Memory, resource.BinarySI)
			res.Limits[corev1.ResourceMemory], res.Requests[corev1.ResourceMemory] = q, q
		}
		if s.MilliCPUs > 0 {
			q := *resource.NewMilliQuantity(s.MilliCPUs, resource.DecimalSI)
			res.Limits[corev1.ResourceCPU], res.Requests[corev1.ResourceCPU] = q, q
		}
	}
	mounts := []corev1.VolumeMount{{Name: workspaceVolume, MountPath: workspaceDir}}
	env := []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: s.Name}}}}
	container := func(name string, script string) corev1.Container {
		return corev1.Container{
			Name:            name,
			Image:           s.Image,
			ImagePullPolicy: s.PullPolicy,
			Command:         []string{"/bin/sh", "-c", script},
			WorkingDir:      s.Workdir,
			EnvFrom:         env,
			VolumeMounts:    mounts,
			Resources:       res,
			SecurityContext: containerSecurity(),
			// The output goes to the executor through the logs API; a
			// termination message would copy its tail into the status.
			TerminationMessagePolicy: corev1.TerminationMessageReadFile,
		}
	}
	copyIn := container(copyContainer, "tar -xf - -C "+workspaceDir)
	copyIn.WorkingDir = workspaceDir
	copyIn.EnvFrom = nil
	copyIn.Stdin, copyIn.StdinOnce = true, true
	inits := []corev1.Container{copyIn}
	for i, p := range s.Phases {
		inits = append(inits, container(phaseContainer(i), runner.PhaseScript(p)))
	}
	hold := "exit 0"
	if s.Hold {
		// Kept alive for the export (an exec of tar); ends on SIGTERM.
		hold = "trap 'exit 0' TERM INT; while :; do sleep 1; done"
	}
	main := container(holdContainer, hold)
	main.EnvFrom = nil
	main.WorkingDir = workspaceDir

	var pullSecrets []corev1.LocalObjectReference
	for _, n := range s.PullSecrets {
		pullSecrets = append(pullSecrets, corev1.LocalObjectReference{Name: n})
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: s.Name, Namespace: s.Namespace, Labels: s.labels(), Annotations: s.annotations(),
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			InitContainers:                inits,
			Containers:                    []corev1.Container{main},
			Volumes:                       []corev1.Volume{{Name: workspaceVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			TerminationGracePeriodSeconds: ptr(int64(graceSeconds(s.Grace))),
			ServiceAccountName:            s.ServiceAccount,
			AutomountServiceAccountToken:  ptr(false),
			EnableServiceLinks:            ptr(false),
			ImagePullSecrets:              pullSecrets,
			SecurityContext: &corev1.PodSecurityContext{
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
		},
	}
	if s.Deadline > 0 {
		pod.Spec.ActiveDeadlineSeconds = ptr(int64((s.Deadline + s.DeadlineMargin + time.Second - 1) / time.Second))
	}
	if s.Owner != nil {
		pod.OwnerReferences = []metav1.OwnerReference{*s.Owner}
	}
	return pod
}

// containerSecurity is as strict as the Docker runtime's host config: not
// privileged, no privilege escalation (no_new_privs), every capability
// dropped and only those a shell job commonly needs added back (see
// dockerrt's hostConfig for the reasons), seccomp RuntimeDefault (set on
// the pod).
func containerSecurity() *corev1.SecurityContext {
	caps := []corev1.Capability{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID", "KILL", "NET_BIND_SERVICE"}
	return &corev1.SecurityContext{
		Privileged:               ptr(false),
		AllowPrivilegeEscalation: ptr(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: caps},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// workingDir returns the phases' working directory for a project root,
// refusing one that leaves the workspace.
func workingDir(projectRoot string) (string, error) {
	root := strings.Trim(projectRoot, "/")
	if root == "" {
		return workspaceDir, nil
	}
	clean := path.Clean(root)
	if clean == ".." || strings.HasPrefix(clean, "../") || strings.ContainsAny(clean, "\x00") {
		return "", fmt.Errorf("project root %q leaves the workspace", projectRoot)
	}
	return path.Join(workspaceDir, clean), nil
}

// ownerReference is the executor's own pod as the owner of its runs' pods:
// when that pod is deleted (scaled down, rolled), the garbage collector
// deletes the runs' pods, and their Secrets with them.
func ownerReference(name, uid string) *metav1.OwnerReference {
	if name == "" || uid == "" {
		return nil
	}
	return &metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: name, UID: types.UID(uid)}
}

func graceSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	s := int((d + time.Second - 1) / time.Second)
	return s
}

func ptr[T any](v T) *T { return &v }
