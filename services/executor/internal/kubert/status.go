package kubert

import (
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/hangar-dev/hangar/services/executor/internal/runner"
)

// errPodGone: the run's pod was deleted by someone other than this run.
var errPodGone = errors.New("the run's pod was deleted outside the executor")

// podProblem is a pod state that ends the run before its phases are done:
// an image that cannot be pulled, an eviction (by the kubelet, the Eviction
// API, a preemption, the taint manager), the pod's deadline, a configuration
// the kubelet refuses, or no node for longer than pendingTimeout. nil:
// nothing wrong (yet).
type podProblem struct {
	reason string // human-readable, no secret: names and Kubernetes messages
	// deadline: activeDeadlineSeconds passed; the error then wraps
	// runner.ErrRunTimeout, so that the run is reported timed out.
	deadline bool
	// final: the pod is being stopped whatever its containers do; it wins
	// over a container that ends at the same moment (killed for it).
	final bool
}

func (p *podProblem) Error() string { return p.reason }

func (p *podProblem) Unwrap() error {
	if p.deadline {
		return runner.ErrRunTimeout
	}
	return nil
}

// disruptions words the reasons of a pod's DisruptionTarget condition: the
// pod is about to be deleted by someone other than its executor.
var disruptions = map[string]string{
	"EvictionByEvictionAPI":               "evicted through the Eviction API (a node drain, or an autoscaler removing the node)",
	corev1.PodReasonPreemptionByScheduler: "evicted: preempted by the scheduler for a pod of higher priority",
	"DeletionByTaintManager":              "evicted by the taint manager (its node has a NoExecute taint the pod does not tolerate)",
	corev1.PodReasonTerminationByKubelet:  "evicted by the kubelet (node pressure or node shutdown)",
	"DeletionByPodGC":                     "evicted: deleted by the pod garbage collector (its node is gone)",
}

// imageErrors are waiting reasons that mean the image will not come: the
// kubelet retries a pull with back-off, so the first back-off ends the run.
var imageErrors = map[string]bool{
	"ImagePullBackOff": true, "ErrImageNeverPull": true, "InvalidImageName": true,
	"ErrImagePull": false, // the first failure: wait for the back-off, which follows at once
}

// configErrors are waiting reasons of a container the kubelet cannot create.
var configErrors = map[string]bool{"CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true}

// problem inspects the pod's status.
func problem(pod *corev1.Pod, now time.Time, pendingTimeout time.Duration) *podProblem {
	if pod == nil {
		return nil
	}
	st := pod.Status
	switch {
	case st.Reason == "Evicted":
		return &podProblem{reason: "the run's pod was evicted by the kubelet: " + oneLine(st.Message), final: true}
	case st.Reason == "DeadlineExceeded":
		limit := "its activeDeadlineSeconds"
		if d := pod.Spec.ActiveDeadlineSeconds; d != nil {
			limit = fmt.Sprintf("its activeDeadlineSeconds (%ds: the run timeout and a margin)", *d)
		}
		return &podProblem{reason: "the run's pod ran past " + limit + " and the kubelet stopped it", deadline: true, final: true}
	}
	for _, c := range st.Conditions {
		if c.Type != corev1.DisruptionTarget || c.Status != corev1.ConditionTrue {
			continue
		}
		what, ok := disruptions[c.Reason]
		if !ok {
			what = "evicted (" + c.Reason + ")"
		}
		return &podProblem{reason: fmt.Sprintf("the run's pod was %s: %s", what, oneLine(c.Message)), final: true}
	}
	all := append(append([]corev1.ContainerStatus{}, st.InitContainerStatuses...), st.ContainerStatuses...)
	for _, cs := range all {
		w := cs.State.Waiting
		if w == nil {
			continue
		}
		if imageErrors[w.Reason] {
			return &podProblem{reason: fmt.Sprintf("the runner image %s could not be pulled (%s): %s%s", cs.Image, w.Reason, oneLine(w.Message), pullHint(w.Message))}
		}
		if configErrors[w.Reason] {
			return &podProblem{reason: fmt.Sprintf("container %s could not be created (%s): %s", cs.Name, w.Reason, oneLine(w.Message))}
		}
	}
	if st.Phase == corev1.PodPending && pendingTimeout > 0 {
		for _, c := range st.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable &&
				now.Sub(pod.CreationTimestamp.Time) > pendingTimeout {
				return &podProblem{reason: fmt.Sprintf("the run's pod could not be scheduled within %s: %s", pendingTimeout, oneLine(c.Message))}
			}
		}
	}
	return nil
}

// pullHint adds what to check when a registry refused the pull's
// credentials.
func pullHint(msg string) string {
	m := strings.ToLower(msg)
	if strings.Contains(m, "401 unauthorized") || strings.Contains(m, "403 forbidden") || strings.Contains(m, "authorization failed") ||
		strings.Contains(m, "no basic auth credentials") || strings.Contains(m, "denied") {
		return " (the registry refused the credentials: check HANGAR_KUBE_IMAGE_PULL_SECRETS and that Secret)"
	}
	return ""
}

// containerStatus returns the status of the named (init) container.
func containerStatus(pod *corev1.Pod, name string) *corev1.ContainerStatus {
	if pod == nil {
		return nil
	}
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	return nil
}

// started reports whether the container runs or has run.
func started(pod *corev1.Pod, name string) bool {
	cs := containerStatus(pod, name)
	return cs != nil && (cs.State.Running != nil || cs.State.Terminated != nil)
}

// terminated returns the container's end, nil while it has not ended.
func terminated(pod *corev1.Pod, name string) *corev1.ContainerStateTerminated {
	cs := containerStatus(pod, name)
	if cs == nil {
		return nil
	}
	return cs.State.Terminated
}

// phaseEnd describes how a phase container ended: "" for exit code 0, else
// the reason of the failure.
func phaseEnd(phase string, t *corev1.ContainerStateTerminated, memory int64) string {
	switch {
	case t.Reason == "OOMKilled":
		limit := "the node's memory"
		if memory > 0 {
			limit = fmt.Sprintf("its memory limit of %d MiB", memory>>20)
		}
		return fmt.Sprintf("phase %s was killed for running out of memory (OOMKilled: %s, exit code %d)", phase, limit, t.ExitCode)
	case t.ExitCode != 0 && t.Signal != 0:
		return fmt.Sprintf("phase %s killed by signal %d (exit code %d)", phase, t.Signal, t.ExitCode)
	case t.ExitCode != 0 && t.Reason != "" && t.Reason != "Error" && t.Reason != "Completed":
		return fmt.Sprintf("phase %s exited with code %d (%s)", phase, t.ExitCode, t.Reason)
	case t.ExitCode != 0:
		return fmt.Sprintf("phase %s exited with code %d", phase, t.ExitCode)
	}
	return ""
}

// oneLine puts a Kubernetes message on one line, at most about 400 bytes:
// a longer one keeps its start and its end (where the kubelet puts the
// cause, e.g. a registry's "401 Unauthorized").
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = strings.ToValidUTF8(s[:150]+"…"+s[len(s)-250:], "")
	}
	return s
}
