package kubert

import (
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
)

func TestNames(t *testing.T) {
	long := strings.Repeat("A_b-", 16)
	for _, id := range []string{"r1", "RUN_ABC", "run-abc", "run_abc", "-x-", "__", long, long[:63] + "Z"} {
		n := podName(id)
		if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 || len(n) > 63 {
			t.Errorf("podName(%q) = %q: not a DNS label: %v", id, n, errs)
		}
		if errs := validation.IsDNS1123Label(n); len(errs) > 0 {
			t.Errorf("podName(%q) = %q: %v", id, n, errs)
		}
		v := labelValue(id)
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			t.Errorf("labelValue(%q) = %q: %v", id, v, errs)
		}
	}
	// Ids that differ only where they are cleaned never share a name.
	pairs := [][2]string{{"run_abc", "run-abc"}, {"RUN", "run"}, {long, long[:63] + "Z"}}
	for _, p := range pairs {
		if podName(p[0]) == podName(p[1]) {
			t.Errorf("podName(%q) == podName(%q)", p[0], p[1])
		}
		if labelValue(p[0]) == labelValue(p[1]) && p[0] != p[1] && (len(p[0]) > 63 || len(p[1]) > 63) {
			t.Errorf("labelValue(%q) == labelValue(%q)", p[0], p[1])
		}
	}
	if labelValue("exec-a") != "exec-a" {
		t.Errorf("a valid label value is kept as is: %q", labelValue("exec-a"))
	}
}

func TestPodSpec(t *testing.T) {
	s := &podSpec{
		Namespace: "runs", Name: podName("r1"), RunID: "r1", ExecutorID: "exec-a", PoolID: "pool-a",
		Image: "img:1", Workdir: "/workspace/infra", Grace: 1500 * time.Millisecond, Deadline: 10 * time.Minute, DeadlineMargin: 2500 * time.Millisecond,
		Memory: 64 << 20, MilliCPUs: 250, PullPolicy: corev1.PullNever, PullSecrets: []string{"regcred"},
		Phases: []*runv1.Phase{{Name: "init", Commands: []string{"echo a"}}, {Name: "plan", Commands: []string{"echo b"}}},
		Owner:  ownerReference("executor-0", "uid-1"),
	}
	pod := s.pod()
	if got := pod.Labels; got[LabelManaged] != "true" || got[LabelRunID] != "r1" || got[LabelExecutorID] != "exec-a" || got[LabelPoolID] != "pool-a" {
		t.Errorf("labels = %v", got)
	}
	sp := pod.Spec
	if sp.RestartPolicy != corev1.RestartPolicyNever || *sp.AutomountServiceAccountToken || *sp.EnableServiceLinks {
		t.Errorf("restart policy %s, token mounted %v, service links %v", sp.RestartPolicy, *sp.AutomountServiceAccountToken, *sp.EnableServiceLinks)
	}
	if sp.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod seccomp = %v", sp.SecurityContext.SeccompProfile)
	}
	if *sp.ActiveDeadlineSeconds != 603 || *sp.TerminationGracePeriodSeconds != 2 {
		t.Errorf("deadline %d, grace %d", *sp.ActiveDeadlineSeconds, *sp.TerminationGracePeriodSeconds)
	}
	if len(pod.OwnerReferences) != 1 || pod.OwnerReferences[0].Name != "executor-0" {
		t.Errorf("owner = %v", pod.OwnerReferences)
	}
	if len(sp.ImagePullSecrets) != 1 || sp.ImagePullSecrets[0].Name != "regcred" {
		t.Errorf("pull secrets = %v", sp.ImagePullSecrets)
	}
	names := []string{}
	for _, c := range append(append([]corev1.Container{}, sp.InitContainers...), sp.Containers...) {
		names = append(names, c.Name)
		sc := c.SecurityContext
		if *sc.Privileged || *sc.AllowPrivilegeEscalation || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
			t.Errorf("%s: security context %+v", c.Name, sc)
		}
		for _, cap := range sc.Capabilities.Add {
			if cap == "SYS_ADMIN" || cap == "NET_RAW" || cap == "MKNOD" {
				t.Errorf("%s: capability %s added", c.Name, cap)
			}
		}
		if c.Resources.Limits.Memory().Value() != 64<<20 || c.Resources.Requests.Cpu().MilliValue() != 250 {
			t.Errorf("%s: resources %v", c.Name, c.Resources)
		}
		if c.Image != "img:1" || c.ImagePullPolicy != corev1.PullNever {
			t.Errorf("%s: image %s %s", c.Name, c.Image, c.ImagePullPolicy)
		}
	}
	if strings.Join(names, ",") != "hangar-workspace,phase-0,phase-1,hangar-done" {
		t.Errorf("containers = %v", names)
	}
	p0 := sp.InitContainers[1]
	if p0.WorkingDir != "/workspace/infra" || len(p0.EnvFrom) != 1 || p0.EnvFrom[0].SecretRef.Name != s.Name {
		t.Errorf("phase container: workdir %q, envFrom %v", p0.WorkingDir, p0.EnvFrom)
	}
	if !strings.Contains(p0.Command[2], "echo a") {
		t.Errorf("phase 0 runs %q", p0.Command)
	}
	if c := sp.InitContainers[0]; !c.Stdin || !c.StdinOnce || len(c.EnvFrom) != 0 {
		t.Errorf("copy container: stdin %v once %v envFrom %v", c.Stdin, c.StdinOnce, c.EnvFrom)
	}
	if pod.Annotations["hangar.dev/phase-1"] != "plan" {
		t.Errorf("annotations = %v", pod.Annotations)
	}

	sec := s.secret([]string{"A=1", "B=x=y", "A=2"})
	if string(sec.Data["A"]) != "2" || string(sec.Data["B"]) != "x=y" || !*sec.Immutable {
		t.Errorf("secret data = %v", sec.Data)
	}
	if s.Hold {
		t.Fatal("hold set")
	}
	if got := sp.Containers[0].Command[2]; got != "exit 0" {
		t.Errorf("main container without hold runs %q", got)
	}
	s.Hold = true
	if got := s.pod().Spec.Containers[0].Command[2]; !strings.Contains(got, "trap") {
		t.Errorf("main container with hold runs %q", got)
	}
	s.Memory, s.MilliCPUs, s.Deadline, s.Owner = 0, 0, 0, nil
	pod = s.pod()
	if pod.Spec.ActiveDeadlineSeconds != nil || len(pod.OwnerReferences) != 0 || pod.Spec.InitContainers[1].Resources.Limits != nil {
		t.Errorf("no deadline, owner or limits expected: %v %v %v", pod.Spec.ActiveDeadlineSeconds, pod.OwnerReferences, pod.Spec.InitContainers[1].Resources)
	}
}

func TestWorkingDir(t *testing.T) {
	for _, tc := range []struct{ root, want string }{
		{"", "/workspace"}, {"/", "/workspace"}, {"infra/prod", "/workspace/infra/prod"}, {"/a/./b/", "/workspace/a/b"},
		{"..", ""}, {"../x", ""}, {"a/../../x", ""},
	} {
		got, err := workingDir(tc.root)
		if tc.want == "" {
			if err == nil {
				t.Errorf("workingDir(%q) = %q, want an error", tc.root, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("workingDir(%q) = %q, %v; want %q", tc.root, got, err, tc.want)
		}
	}
}

func waiting(name, reason, msg string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, Image: "img:1", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}
}

func TestProblem(t *testing.T) {
	now := time.Now()
	created := metav1.NewTime(now.Add(-time.Hour))
	fresh := metav1.NewTime(now)
	unsched := []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: "0/1 nodes are available: 1 Insufficient memory."}}
	for _, tc := range []struct {
		name     string
		pod      corev1.Pod
		want     string // substring; "" = no problem
		deadline bool
	}{
		{"running", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning}}, "", false},
		{"evicted", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted", Message: "The node was low on resource: memory."}}, "the run's pod was evicted by the kubelet: The node was low", false},
		{"deadline", corev1.Pod{Spec: corev1.PodSpec{ActiveDeadlineSeconds: ptr(int64(125))}, Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "DeadlineExceeded"}},
			"the run's pod ran past its activeDeadlineSeconds (125s: the run timeout and a margin) and the kubelet stopped it", true},
		{"Eviction API", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "EvictionByEvictionAPI", Message: "Eviction API: evicting"}}}},
			"the run's pod was evicted through the Eviction API (a node drain, or an autoscaler removing the node): Eviction API: evicting", false},
		{"preempted", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "PreemptionByScheduler", Message: "m"}}}},
			"evicted: preempted by the scheduler", false},
		{"unknown disruption", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "SomethingNew", Message: "m"}}}},
			"the run's pod was evicted (SomethingNew): m", false},
		{"disruption condition cleared", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.DisruptionTarget, Status: corev1.ConditionFalse, Reason: "EvictionByEvictionAPI"}}}}, "", false},
		{"pull back-off", corev1.Pod{Status: corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{waiting("hangar-workspace", "ImagePullBackOff", "Back-off pulling image")}}}, "runner image img:1 could not be pulled (ImagePullBackOff): Back-off pulling image", false},
		{"pull refused credentials", corev1.Pod{Status: corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{waiting("hangar-workspace", "ImagePullBackOff", `Back-off pulling image "r/i:1": ErrImagePull: failed to resolve reference: 401 Unauthorized`)}}},
			"401 Unauthorized (the registry refused the credentials: check HANGAR_KUBE_IMAGE_PULL_SECRETS and that Secret)", false},
		{"first pull error waits for the back-off", corev1.Pod{Status: corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{waiting("hangar-workspace", "ErrImagePull", "x")}}}, "", false},
		{"never pull", corev1.Pod{Status: corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{waiting("phase-0", "ErrImageNeverPull", "not present")}}}, "ErrImageNeverPull", false},
		{"config error", corev1.Pod{Status: corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{waiting("phase-0", "CreateContainerConfigError", "secret \"x\" not found")}}}, "could not be created", false},
		{"unschedulable too long", corev1.Pod{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: created}, Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: unsched}}, "could not be scheduled within 10m0s: 0/1 nodes are available", false},
		{"unschedulable for now", corev1.Pod{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: fresh}, Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: unsched}}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := problem(&tc.pod, now, 10*time.Minute)
			switch {
			case tc.want == "" && p != nil:
				t.Errorf("problem = %q, want none", p.reason)
			case tc.want != "" && (p == nil || !strings.Contains(p.reason, tc.want)):
				t.Errorf("problem = %v, want %q", p, tc.want)
			case p != nil && p.deadline != tc.deadline:
				t.Errorf("deadline = %v", p.deadline)
			case p != nil && errors.Is(p, runner.ErrRunTimeout) != tc.deadline:
				t.Errorf("errors.Is(problem, runner.ErrRunTimeout) = %v: only the deadline is a timeout", !tc.deadline)
			case p != nil && p.final != (tc.deadline || strings.Contains(tc.want, "evicted")):
				t.Errorf("final = %v: only evictions and the deadline stop the pod whatever its containers do", p.final)
			}
		})
	}
}

func TestOneLine(t *testing.T) {
	long := `Back-off pulling image "127.0.0.1:44681/hangar/private-runner:1": ErrImagePull: failed to pull and unpack image "127.0.0.1:44681/hangar/private-runner:1": ` +
		strings.Repeat("failed to resolve reference \"127.0.0.1:44681/hangar/private-runner:1\": ", 4) + "pulling from host 127.0.0.1:44681 failed with status code [manifests 1]: 401 Unauthorized"
	got := oneLine(long)
	if len(got) > 410 || !strings.HasPrefix(got, "Back-off pulling image") || !strings.HasSuffix(got, "401 Unauthorized") || !strings.Contains(got, "…") {
		t.Errorf("oneLine of a long message = %q (%d bytes): want its start and its end", got, len(got))
	}
	if got := oneLine("a\n  b\tc"); got != "a b c" {
		t.Errorf("oneLine = %q", got)
	}
}

func TestPhaseEnd(t *testing.T) {
	for _, tc := range []struct {
		t    corev1.ContainerStateTerminated
		mem  int64
		want string
	}{
		{corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}, 0, ""},
		{corev1.ContainerStateTerminated{ExitCode: 3, Reason: "Error"}, 0, "phase plan exited with code 3"},
		{corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}, 32 << 20, "phase plan was killed for running out of memory (OOMKilled: its memory limit of 32 MiB, exit code 137)"},
		{corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}, 0, "OOMKilled: the node's memory"},
		{corev1.ContainerStateTerminated{ExitCode: 128, Reason: "StartError"}, 0, "phase plan exited with code 128 (StartError)"},
	} {
		if got := phaseEnd("plan", &tc.t, tc.mem); !strings.Contains(got, tc.want) || (tc.want == "") != (got == "") {
			t.Errorf("phaseEnd(%+v) = %q, want %q", tc.t, got, tc.want)
		}
	}
}
