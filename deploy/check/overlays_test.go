package check

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

const (
	kubernetesOverlay = "../k8s/overlays/kubernetes"
	dockerOverlay     = "../k8s/overlays/docker"
	runsNamespace     = "hangar-runs"
)

// TestKubernetesOverlay: the recommended overlay runs executors as a
// Deployment in hangar-runs (no DaemonSet, no host path, no Docker), with a
// ServiceAccount whose Role allows exactly what the kubernetes runtime does
// there, nothing cluster-wide; gateway and logship admit the executors from
// hangar-runs; every container passes the base's checks.
func TestKubernetesOverlay(t *testing.T) {
	objs := buildDir(t, kubernetesOverlay)
	if ds := find[*appsv1.DaemonSet](objs); len(ds) > 0 {
		t.Errorf("the kubernetes overlay still has DaemonSet %s", ds[0].Name)
	}
	for _, o := range objs {
		switch o.obj.(type) {
		case *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding:
			t.Errorf("%s: nothing cluster-wide", o.source)
		}
		ns := o.meta.GetNamespace()
		if o.gvk.Kind != "Namespace" && ns != namespace && ns != runsNamespace {
			t.Errorf("%s: namespace %q", o.source, ns)
		}
	}
	for name, level := range map[string]string{namespace: "restricted", runsNamespace: "baseline"} {
		ns := findNamed[*corev1.Namespace](t, objs, "Namespace", name)
		if ns.Labels["pod-security.kubernetes.io/enforce"] != level {
			t.Errorf("namespace %s: enforce %q, want %q", name, ns.Labels["pod-security.kubernetes.io/enforce"], level)
		}
	}

	ex := findNamed[*appsv1.Deployment](t, objs, "Deployment", "hangar-executor")
	if ex.Namespace != runsNamespace {
		t.Errorf("Deployment hangar-executor in %q, want %q (its runs' namespace: owner references do not cross namespaces)", ex.Namespace, runsNamespace)
	}
	pod := &ex.Spec.Template.Spec
	if pod.ServiceAccountName != "hangar-executor" || pod.AutomountServiceAccountToken == nil || !*pod.AutomountServiceAccountToken {
		t.Errorf("executor: serviceAccountName %q, token mounted %v", pod.ServiceAccountName, pod.AutomountServiceAccountToken)
	}
	c := &pod.Containers[0]
	for _, err := range []error{checkImage(c.Image), checkProbe(c, "liveness", c.LivenessProbe, "/livez"),
		checkProbe(c, "readiness", c.ReadinessProbe, "/readyz"), checkResources(c.Resources), checkSecurity(pod, c)} {
		if err != nil {
			t.Errorf("executor: %v", err)
		}
	}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			t.Errorf("executor: host path %s", v.HostPath.Path)
		}
	}
	if e := envVar(c, "HANGAR_EXECUTOR_RUNTIME"); e == nil || e.Value != "kubernetes" {
		t.Errorf("executor: HANGAR_EXECUTOR_RUNTIME must be kubernetes")
	}
	for name, field := range map[string]string{"HANGAR_EXECUTOR_ID": "metadata.name", "HANGAR_KUBE_POD_NAME": "metadata.name",
		"HANGAR_KUBE_POD_UID": "metadata.uid", "HANGAR_KUBE_POD_NAMESPACE": "metadata.namespace", "HANGAR_KUBE_NAMESPACE": "metadata.namespace"} {
		if e := envVar(c, name); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != field {
			t.Errorf("executor: %s must come from the downward API's %s", name, field)
		}
	}
	for _, v := range []string{"HANGAR_TLS_CA", "HANGAR_TLS_ENROLL_CERT", "HANGAR_TLS_ENROLL_KEY"} {
		if envVar(c, v) == nil {
			t.Errorf("executor: %s not set: the pool's gRPC is mutual TLS", v)
		}
	}
	if e := envVar(c, "DOCKER_HOST"); e != nil {
		t.Errorf("executor: no Docker here, DOCKER_HOST set")
	}
	for _, addr := range []struct{ env, svc string }{{"HANGAR_GATEWAY_ADDR", "hangar-gateway"}, {"HANGAR_LOGSHIP_ADDR", "hangar-logship"}} {
		e := envVar(c, addr.env)
		svc := findNamed[*corev1.Service](t, objs, "Service", addr.svc)
		want := fmt.Sprintf("%s.%s.svc:%d", svc.Name, svc.Namespace, svc.Spec.Ports[0].Port)
		if e == nil || e.Value != want {
			t.Errorf("executor: %s = %v, want %s", addr.env, e, want)
		}
	}
	for _, w := range workloads(objs) {
		if w.name == "Deployment hangar-executor" {
			continue
		}
		if a := w.template.Spec.AutomountServiceAccountToken; a == nil || *a {
			t.Errorf("%s: only the executor gets a service account token", w.name)
		}
	}

	role := findNamed[*rbacv1.Role](t, objs, "Role", "hangar-executor")
	if role.Namespace != runsNamespace {
		t.Errorf("Role in %q", role.Namespace)
	}
	got := map[string][]string{}
	for _, r := range role.Rules {
		if len(r.APIGroups) != 1 || r.APIGroups[0] != "" || len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("Role rule %+v: core resources only, no names", r)
		}
		for _, res := range r.Resources {
			v := slices.Clone(r.Verbs)
			slices.Sort(v)
			got[res] = v
		}
	}
	want := map[string][]string{
		"pods":        {"create", "delete", "get", "list", "watch"},
		"pods/log":    {"get"},
		"pods/attach": {"create", "get"},
		"pods/exec":   {"create", "get"},
		"secrets":     {"create", "delete", "get"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Role rules = %v\nwant exactly %v", got, want)
	}
	rb := findNamed[*rbacv1.RoleBinding](t, objs, "RoleBinding", "hangar-executor")
	if rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != role.Name || len(rb.Subjects) != 1 ||
		rb.Subjects[0].Kind != "ServiceAccount" || rb.Subjects[0].Name != "hangar-executor" || rb.Namespace != runsNamespace {
		t.Errorf("RoleBinding = %+v", rb)
	}
	sa := findNamed[*corev1.ServiceAccount](t, objs, "ServiceAccount", "hangar-executor")
	if sa.Namespace != runsNamespace {
		t.Errorf("ServiceAccount in %q", sa.Namespace)
	}

	// The executors, now in hangar-runs, reach the gateway and logship.
	for name, port := range map[string]int{"hangar-gateway": 7300, "hangar-logship": 7302} {
		np := findNamed[*networkingv1.NetworkPolicy](t, objs, "NetworkPolicy", name)
		ok := false
		for _, in := range np.Spec.Ingress {
			for _, from := range in.From {
				if from.NamespaceSelector != nil && from.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] == runsNamespace &&
					from.PodSelector != nil && from.PodSelector.MatchLabels["app.kubernetes.io/name"] == "hangar-executor" &&
					len(in.Ports) == 1 && in.Ports[0].Port.IntValue() == port {
					ok = true
				}
			}
		}
		if !ok {
			t.Errorf("NetworkPolicy %s: no ingress from hangar-runs' executors on %d", name, port)
		}
	}
	runs := findNamed[*networkingv1.NetworkPolicy](t, objs, "NetworkPolicy", "hangar-runs")
	if runs.Spec.PodSelector.MatchLabels["hangar.dev/managed"] != "true" || len(runs.Spec.Ingress) != 0 {
		t.Errorf("NetworkPolicy hangar-runs must select the runs' pods (hangar.dev/managed) and admit nothing")
	}
}

// TestDockerOverlay: the other overlay keeps the DaemonSet on the nodes'
// Docker Engine, and no Role.
func TestDockerOverlay(t *testing.T) {
	objs := buildDir(t, dockerOverlay)
	findNamed[*appsv1.DaemonSet](t, objs, "DaemonSet", "hangar-executor")
	if r := find[*rbacv1.Role](objs); len(r) > 0 {
		t.Errorf("the docker overlay has a Role")
	}
}

// TestKEDAExample: the ScaledObject scales the kubernetes overlay's executor
// Deployment from metrics that Hangar exports.
func TestKEDAExample(t *testing.T) {
	objs := decodeFile(t, "../k8s/examples/keda-scaledobject.yaml")
	if len(objs) != 1 {
		t.Fatalf("want one ScaledObject, got %d", len(objs))
	}
	so, ok := objs[0].obj.(*ScaledObject)
	if !ok {
		t.Fatalf("not a ScaledObject: %T", objs[0].obj)
	}
	if so.Namespace != runsNamespace || so.Spec.ScaleTargetRef.Kind != "Deployment" || so.Spec.ScaleTargetRef.Name != "hangar-executor" {
		t.Errorf("ScaledObject targets %s %s/%s", so.Spec.ScaleTargetRef.Kind, so.Namespace, so.Spec.ScaleTargetRef.Name)
	}
	sources := map[string]string{
		"hangar_gateway_runs_queued":        "../../services/gateway/internal/dispatch/dispatch.go",
		"hangar_executor_runs_active":       "../../services/executor/internal/worker/worker.go",
		"hangar_executor_kube_pending_pods": "../../services/executor/internal/kubert/kubert.go",
	}
	seen := map[string]bool{}
	for _, tr := range so.Spec.Triggers {
		q := tr.Metadata["query"]
		if tr.Type != "prometheus" || q == "" {
			t.Errorf("trigger %+v: want a prometheus query", tr)
		}
		for m, file := range sources {
			if strings.Contains(q, m) {
				seen[m] = true
				src, err := os.ReadFile(filepath.Clean(file))
				if err != nil || !strings.Contains(string(src), `"`+m+`"`) {
					t.Errorf("query %q reads %s, which %s does not declare", q, m, file)
				}
			}
		}
	}
	if !seen["hangar_executor_kube_pending_pods"] || !seen["hangar_gateway_runs_queued"] {
		t.Errorf("the ScaledObject must read the queue and the pending pods: %v", seen)
	}
}
