package kubert

import (
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// errPodGone: the run's pod was deleted by someone other than this run.
var errPodGone = errors.New("the run's pod was deleted outside the executor")

// podProblem is a pod state that ends the run as failed before its phases
// are done: an image that cannot be pulled, an eviction, the pod's deadline,
// a configuration the kubelet refuses, or no node for longer than
// pendingTimeout. nil: nothing wrong (yet).
type podProblem struct {
	reason   string // human-readable, no secret: names and Kubernetes messages
	deadline bool   // activeDeadlineSeconds passed
}

func (p *podProblem) Error() string { return p.reason }

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
		return &podProblem{reason: "the run's pod was evicted: " + oneLine(st.Message)}
	case st.Reason == "DeadlineExceeded":
		return &podProblem{reason: "the run's pod reached its deadline (activeDeadlineSeconds)", deadline: true}
	}
	all := append(append([]corev1.ContainerStatus{}, st.InitContainerStatuses...), st.ContainerStatuses...)
	for _, cs := range all {
		w := cs.State.Waiting
		if w == nil {
			continue
		}
		if imageErrors[w.Reason] {
			return &podProblem{reason: fmt.Sprintf("the runner image %s could not be pulled (%s): %s", cs.Image, w.Reason, oneLine(w.Message))}
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

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
