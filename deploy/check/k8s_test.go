package check

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

const (
	k8sDir    = "../k8s"
	baseDir   = "../k8s/base"
	namespace = "hangar"
)

// debugPorts is the debug port (/metrics, /livez, /readyz) of each image.
var debugPorts = map[string]int32{
	"hangar/gateway":  9300,
	"hangar/policy":   9301,
	"hangar/logship":  9302,
	"hangar/executor": 9303,
}

// manifestFiles returns every YAML file under deploy/k8s.
func manifestFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(k8sDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no manifests under %s", k8sDir)
	}
	return files
}

func decodeFile(t *testing.T, path string) []*object {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := splitDocuments(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []*object
	for i, doc := range docs {
		o, err := decodeStrict(fmt.Sprintf("%s#%d", path, i), doc)
		if err != nil {
			t.Error(err)
			continue
		}
		out = append(out, o)
	}
	return out
}

// TestManifestsDecodeStrictly decodes every document of every file under
// deploy/k8s (the kustomization and the example Secrets included) into its
// API type, refusing unknown and duplicate fields.
func TestManifestsDecodeStrictly(t *testing.T) {
	n := 0
	for _, f := range manifestFiles(t) {
		n += len(decodeFile(t, f))
	}
	t.Logf("%d documents decoded strictly", n)
}

// TestStrictDecodingRefusesTypos makes sure the strict decoding above is
// strict: a misspelt field of a built-in kind and of the ServiceMonitor mirror
// are errors.
func TestStrictDecodingRefusesTypos(t *testing.T) {
	for name, doc := range map[string]string{
		"deployment": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 2\n",
		"container":  "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n    - name: a\n      image: a:1\n      readinessProbes: {}\n",
		"monitor":    "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec:\n  endpoint: []\n",
		"case":       "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n    - name: a\n      image: a:1\n      securityContext: {readOnlyRootFileSystem: true}\n",
		"duplicate":  "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nmetadata: {name: y}\n",
		"unknown":    "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n",
	} {
		if _, err := decodeStrict(name, []byte(doc)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

// build runs the kustomize build of deploy/k8s/base in process and decodes
// every resource it outputs strictly.
func build(t *testing.T) []*object {
	t.Helper()
	return buildDir(t, baseDir)
}

// buildDir runs the kustomize build of dir and decodes every resource
// strictly.
func buildDir(t *testing.T, dir string) []*object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out []*object
	for i, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		o, err := decodeStrict(fmt.Sprintf("build#%d (%s %s)", i, r.GetKind(), r.GetName()), y)
		if err != nil {
			t.Error(err)
			continue
		}
		out = append(out, o)
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

func find[T any](objs []*object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func findNamed[T any](t *testing.T, objs []*object, kind, name string) T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.obj.(T); ok && o.meta.GetName() == name {
			return v
		}
	}
	var zero T
	t.Fatalf("the build has no %s %s", kind, name)
	return zero
}

// workload is a pod template and the object holding it.
type workload struct {
	name     string
	template *corev1.PodTemplateSpec
}

func workloads(objs []*object) []workload {
	var out []workload
	for _, d := range find[*appsv1.Deployment](objs) {
		out = append(out, workload{"Deployment " + d.Name, &d.Spec.Template})
	}
	for _, d := range find[*appsv1.DaemonSet](objs) {
		out = append(out, workload{"DaemonSet " + d.Name, &d.Spec.Template})
	}
	for _, d := range find[*appsv1.StatefulSet](objs) {
		out = append(out, workload{"StatefulSet " + d.Name, &d.Spec.Template})
	}
	return out
}

func imageName(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		return image[:i]
	}
	return image
}

// checkImage requires a tag (or a digest) other than latest.
func checkImage(image string) error {
	if strings.Contains(image, "@sha256:") {
		return nil
	}
	slash := strings.LastIndex(image, "/")
	colon := strings.LastIndex(image, ":")
	if colon <= slash {
		return fmt.Errorf("image %q has no tag", image)
	}
	if tag := image[colon+1:]; tag == "" || tag == "latest" {
		return fmt.Errorf("image %q: tag %q is not allowed", image, tag)
	}
	return nil
}

// probePort resolves a probe's port against the container's ports.
func probePort(c *corev1.Container, p intstr.IntOrString) (int32, error) {
	if p.Type == intstr.Int {
		return p.IntVal, nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("port %q is not a port of the container", p.StrVal)
}

func checkProbe(c *corev1.Container, kind string, p *corev1.Probe, path string) error {
	if p == nil {
		return fmt.Errorf("no %s probe", kind)
	}
	if p.HTTPGet == nil {
		return fmt.Errorf("%s probe is not an HTTP GET", kind)
	}
	if p.HTTPGet.Path != path {
		return fmt.Errorf("%s probe path %q, want %q", kind, p.HTTPGet.Path, path)
	}
	port, err := probePort(c, p.HTTPGet.Port)
	if err != nil {
		return fmt.Errorf("%s probe: %w", kind, err)
	}
	want, ok := debugPorts[imageName(c.Image)]
	if !ok {
		return fmt.Errorf("image %q is not a Hangar service with a known debug port", c.Image)
	}
	if port != want {
		return fmt.Errorf("%s probe on port %d, want the debug port %d", kind, port, want)
	}
	return nil
}

func checkResources(r corev1.ResourceRequirements) error {
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, ok := r.Requests[res]
		if !ok || req.IsZero() {
			return fmt.Errorf("no %s request", res)
		}
		lim, ok := r.Limits[res]
		if !ok || lim.IsZero() {
			return fmt.Errorf("no %s limit", res)
		}
		if lim.Cmp(req) < 0 {
			return fmt.Errorf("%s limit %s below its request %s", res, lim.String(), req.String())
		}
	}
	return nil
}

func checkSecurity(pod *corev1.PodSpec, c *corev1.Container) error {
	sc := c.SecurityContext
	if sc == nil {
		return fmt.Errorf("no securityContext")
	}
	nonRoot := sc.RunAsNonRoot
	if nonRoot == nil && pod.SecurityContext != nil {
		nonRoot = pod.SecurityContext.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		return fmt.Errorf("runAsNonRoot is not true")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		return fmt.Errorf("readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		return fmt.Errorf("allowPrivilegeEscalation is not false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		return fmt.Errorf("privileged")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		return fmt.Errorf("capabilities must drop ALL and add none")
	}
	return nil
}

// TestKustomizeBuild builds deploy/k8s/base with kustomize in process; every
// resource must decode strictly, sit in the hangar namespace, and the set must
// hold the pool's parts.
func TestKustomizeBuild(t *testing.T) {
	objs := build(t)
	for _, o := range objs {
		if o.gvk.Kind == "Namespace" {
			continue
		}
		if o.meta.GetNamespace() != namespace {
			t.Errorf("%s: namespace %q, want %q", o.source, o.meta.GetNamespace(), namespace)
		}
	}
	ns := findNamed[*corev1.Namespace](t, objs, "Namespace", namespace)
	if ns.Labels["pod-security.kubernetes.io/warn"] != "restricted" {
		t.Errorf("namespace %s: pod-security warn label should be restricted", namespace)
	}

	gw := findNamed[*appsv1.StatefulSet](t, objs, "StatefulSet", "hangar-gateway")
	if gw.Spec.Replicas == nil || *gw.Spec.Replicas != 2 {
		t.Errorf("hangar-gateway: want 2 replicas")
	}
	if len(gw.Spec.VolumeClaimTemplates) != 1 || gw.Spec.VolumeClaimTemplates[0].Name != "data" {
		t.Errorf("hangar-gateway: its data dir must be a volume of its own (volumeClaimTemplates data)")
	}
	if e := envVar(&gw.Spec.Template.Spec.Containers[0], "HANGAR_GATEWAY_SHARED_SUBSCRIPTION"); e == nil || e.Value != "true" {
		t.Errorf("hangar-gateway: two replicas must split the runs (HANGAR_GATEWAY_SHARED_SUBSCRIPTION=true)")
	}
	findNamed[*appsv1.Deployment](t, objs, "Deployment", "hangar-policy")
	ls := findNamed[*appsv1.Deployment](t, objs, "Deployment", "hangar-logship")
	if ls.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("hangar-logship: its spool is a ReadWriteOnce volume; want the Recreate strategy")
	}
	findNamed[*appsv1.DaemonSet](t, objs, "DaemonSet", "hangar-executor")

	pdb := findNamed[*policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", "hangar-gateway")
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudget hangar-gateway: want minAvailable 1")
	}
	findNamed[*policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", "hangar-policy")
	findNamed[*policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", "hangar-logship")

	deny := findNamed[*networkingv1.NetworkPolicy](t, objs, "NetworkPolicy", "default-deny")
	if len(deny.Spec.PodSelector.MatchLabels)+len(deny.Spec.PodSelector.MatchExpressions) != 0 ||
		!slices.Contains(deny.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) ||
		!slices.Contains(deny.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) ||
		len(deny.Spec.Ingress)+len(deny.Spec.Egress) != 0 {
		t.Errorf("NetworkPolicy default-deny must select every pod and deny ingress and egress")
	}
}

// TestContainers: every container has liveness (/livez) and readiness
// (/readyz) probes on its service's debug port, CPU and memory requests and
// limits, a pinned image tag, and a hardened securityContext; no pod gets
// service links (they would put HANGAR_<SERVICE>_PORT & co. in the
// environment, which the services' strict configuration reads).
func TestContainers(t *testing.T) {
	objs := build(t)
	ws := workloads(objs)
	if len(ws) != 4 {
		t.Errorf("want 4 workloads (gateway, policy, logship, executor), got %d", len(ws))
	}
	for _, w := range ws {
		pod := &w.template.Spec
		if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
			t.Errorf("%s: enableServiceLinks must be false", w.name)
		}
		if len(pod.InitContainers) > 0 {
			t.Errorf("%s: init containers are not expected (add their checks)", w.name)
		}
		for i := range pod.Containers {
			c := &pod.Containers[i]
			where := fmt.Sprintf("%s container %s", w.name, c.Name)
			for _, err := range []error{
				checkImage(c.Image),
				checkProbe(c, "liveness", c.LivenessProbe, "/livez"),
				checkProbe(c, "readiness", c.ReadinessProbe, "/readyz"),
				checkResources(c.Resources),
				checkSecurity(pod, c),
			} {
				if err != nil {
					t.Errorf("%s: %v", where, err)
				}
			}
		}
		for _, v := range pod.Volumes {
			if v.HostPath == nil {
				continue
			}
			want, ok := executorHostPaths[v.HostPath.Path]
			if w.name != "DaemonSet hangar-executor" || !ok || v.HostPath.Type == nil || *v.HostPath.Type != want {
				t.Errorf("%s: hostPath %s: only the executor may mount host paths, the Docker socket (type Socket) and the output relay's directory (type Directory)", w.name, v.HostPath.Path)
			}
		}
	}
}

// executorHostPaths are the only host paths a pod may mount (the Docker
// overlay's executor DaemonSet), with their hostPath type.
var executorHostPaths = map[string]corev1.HostPathType{
	"/var/run/docker.sock":        corev1.HostPathSocket,
	"/var/lib/hangar/executor-io": corev1.HostPathDirectory,
}

// TestExecutorRelayDir: the Docker executor's HANGAR_EXECUTOR_IO_DIR (the
// output relay's binary and the runs' sockets, ADR 0016) is a host path
// mounted at the same path, because the node's Engine, not the executor,
// resolves it when it bind-mounts it into the run containers.
func TestExecutorRelayDir(t *testing.T) {
	objs := build(t)
	ds := findNamed[*appsv1.DaemonSet](t, objs, "DaemonSet", "hangar-executor")
	pod := &ds.Spec.Template.Spec
	c := &pod.Containers[0]
	e := envVar(c, "HANGAR_EXECUTOR_IO_DIR")
	if e == nil || e.Value == "" {
		t.Fatal("executor: HANGAR_EXECUTOR_IO_DIR is not set: the relay's sockets would be under the work directory, which the Engine cannot see")
	}
	var mount *corev1.VolumeMount
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == e.Value {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil || mount.ReadOnly || mount.SubPath != "" {
		t.Fatalf("executor: nothing writable mounted at HANGAR_EXECUTOR_IO_DIR %s", e.Value)
	}
	for _, v := range pod.Volumes {
		if v.Name == mount.Name {
			if v.HostPath == nil || v.HostPath.Path != e.Value {
				t.Errorf("executor: volume %s at HANGAR_EXECUTOR_IO_DIR must be the host path %s (the same path on the node)", v.Name, e.Value)
			}
			return
		}
	}
	t.Errorf("executor: no volume %s", mount.Name)
}

func envVar(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// TestGatewayWiring: the worker id is the pod name, and the token and key are
// files of the Secret hangar-pool (keys token and pool.key.b64).
func TestGatewayWiring(t *testing.T) {
	objs := build(t)
	gw := findNamed[*appsv1.StatefulSet](t, objs, "StatefulSet", "hangar-gateway")
	pod := &gw.Spec.Template.Spec
	c := &pod.Containers[0]
	if e := envVar(c, "HANGAR_WORKER_ID"); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("HANGAR_WORKER_ID must come from the pod name (downward API)")
	}
	for envName, key := range map[string]string{"HANGAR_TOKEN_FILE": "token", "HANGAR_POOL_PRIVATE_KEY_FILE": "pool.key.b64"} {
		e := envVar(c, envName)
		if e == nil {
			t.Errorf("%s is not set", envName)
			continue
		}
		if envVar(c, strings.TrimSuffix(envName, "_FILE")) != nil {
			t.Errorf("both %s and its _FILE variable are set", strings.TrimSuffix(envName, "_FILE"))
		}
		ok := false
		for _, m := range c.VolumeMounts {
			rel, err := filepath.Rel(m.MountPath, e.Value)
			if err != nil || strings.HasPrefix(rel, "..") {
				continue
			}
			for _, v := range pod.Volumes {
				if v.Name != m.Name || v.Secret == nil || v.Secret.SecretName != "hangar-pool" {
					continue
				}
				for _, it := range v.Secret.Items {
					if it.Key == key && it.Path == rel {
						ok = true
					}
				}
			}
		}
		if !ok {
			t.Errorf("%s=%s is not the key %q of the Secret hangar-pool mounted as a file", envName, e.Value, key)
		}
	}
	ex := findNamed[*appsv1.DaemonSet](t, objs, "DaemonSet", "hangar-executor")
	if e := envVar(&ex.Spec.Template.Spec.Containers[0], "HANGAR_EXECUTOR_ID"); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("HANGAR_EXECUTOR_ID must be the node name (one executor per node)")
	}
}

// TestReferences: every ConfigMap, Secret and PersistentVolumeClaim a pod
// uses exists in the build, or (Secrets only, created by hand) in
// secrets.example.yaml, with the keys the pod reads.
func TestReferences(t *testing.T) {
	objs := build(t)
	configMaps := map[string]map[string]bool{}
	for _, cm := range find[*corev1.ConfigMap](objs) {
		configMaps[cm.Name] = keys(cm.Data)
	}
	secrets := map[string]map[string]bool{}
	for _, s := range find[*corev1.Secret](objs) {
		secrets[s.Name] = keys(s.StringData)
	}
	for _, o := range decodeFile(t, filepath.Join(baseDir, "secrets.example.yaml")) {
		if s, ok := o.obj.(*corev1.Secret); ok {
			secrets[s.Name] = keys(s.StringData)
		}
	}
	pvcs := map[string]bool{}
	for _, p := range find[*corev1.PersistentVolumeClaim](objs) {
		pvcs[p.Name] = true
	}
	check := func(where, kind string, known map[string]map[string]bool, name string, optional *bool, key string) {
		ks, ok := known[name]
		if !ok {
			if optional != nil && *optional {
				return
			}
			t.Errorf("%s: %s %q does not exist", where, kind, name)
			return
		}
		if key != "" && !ks[key] {
			t.Errorf("%s: %s %q has no key %q", where, kind, name, key)
		}
	}
	for _, w := range workloads(objs) {
		pod := &w.template.Spec
		for _, v := range pod.Volumes {
			switch {
			case v.ConfigMap != nil:
				check(w.name, "ConfigMap", configMaps, v.ConfigMap.Name, v.ConfigMap.Optional, "")
				for _, it := range v.ConfigMap.Items {
					check(w.name, "ConfigMap", configMaps, v.ConfigMap.Name, v.ConfigMap.Optional, it.Key)
				}
			case v.Secret != nil:
				check(w.name, "Secret", secrets, v.Secret.SecretName, v.Secret.Optional, "")
				for _, it := range v.Secret.Items {
					check(w.name, "Secret", secrets, v.Secret.SecretName, v.Secret.Optional, it.Key)
				}
			case v.PersistentVolumeClaim != nil:
				if !pvcs[v.PersistentVolumeClaim.ClaimName] {
					t.Errorf("%s: PersistentVolumeClaim %q does not exist", w.name, v.PersistentVolumeClaim.ClaimName)
				}
			}
		}
		for _, c := range pod.Containers {
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef != nil {
					check(w.name, "ConfigMap", configMaps, ef.ConfigMapRef.Name, ef.ConfigMapRef.Optional, "")
				}
				if ef.SecretRef != nil {
					check(w.name, "Secret", secrets, ef.SecretRef.Name, nil, "")
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					continue
				}
				if r := e.ValueFrom.SecretKeyRef; r != nil {
					check(w.name, "Secret", secrets, r.Name, r.Optional, r.Key)
				}
				if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
					check(w.name, "ConfigMap", configMaps, r.Name, r.Optional, r.Key)
				}
			}
		}
	}
}

func keys[V any](m map[string]V) map[string]bool {
	out := map[string]bool{}
	for k := range m {
		out[k] = true
	}
	return out
}

// TestSelectors: every Service, PodDisruptionBudget and NetworkPolicy selects
// pods of a workload; every ServiceMonitor selects a Service with the port it
// scrapes; every Service port targets a named container port.
func TestSelectors(t *testing.T) {
	objs := build(t)
	ws := workloads(objs)
	matchesPods := func(sel labels.Selector) bool {
		for _, w := range ws {
			if sel.Matches(labels.Set(w.template.Labels)) {
				return true
			}
		}
		return false
	}
	labelSelector := func(where string, ls *metav1.LabelSelector) labels.Selector {
		sel, err := metav1.LabelSelectorAsSelector(ls)
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		return sel
	}
	services := find[*corev1.Service](objs)
	for _, s := range services {
		sel := labels.SelectorFromSet(s.Spec.Selector)
		if len(s.Spec.Selector) == 0 || !matchesPods(sel) {
			t.Errorf("Service %s selects no pods", s.Name)
			continue
		}
		for _, p := range s.Spec.Ports {
			found := false
			for _, w := range ws {
				if !sel.Matches(labels.Set(w.template.Labels)) {
					continue
				}
				for _, c := range w.template.Spec.Containers {
					for _, cp := range c.Ports {
						if (p.TargetPort.Type == intstr.String && cp.Name == p.TargetPort.StrVal) ||
							(p.TargetPort.Type == intstr.Int && cp.ContainerPort == p.TargetPort.IntVal) {
							found = true
						}
					}
				}
			}
			if !found {
				t.Errorf("Service %s port %s: target port %s is no container port", s.Name, p.Name, p.TargetPort.String())
			}
		}
	}
	for _, p := range find[*policyv1.PodDisruptionBudget](objs) {
		if !matchesPods(labelSelector("PodDisruptionBudget "+p.Name, p.Spec.Selector)) {
			t.Errorf("PodDisruptionBudget %s selects no pods", p.Name)
		}
	}
	for _, np := range find[*networkingv1.NetworkPolicy](objs) {
		if !matchesPods(labelSelector("NetworkPolicy "+np.Name, &np.Spec.PodSelector)) {
			t.Errorf("NetworkPolicy %s selects no pods", np.Name)
		}
	}
	monitors := find[*ServiceMonitor](objs)
	monitored := map[string]bool{}
	for _, sm := range monitors {
		sel := labelSelector("ServiceMonitor "+sm.Name, &sm.Spec.Selector)
		n := 0
		for _, s := range services {
			if !sel.Matches(labels.Set(s.Labels)) {
				continue
			}
			n++
			monitored[s.Name] = true
			for _, ep := range sm.Spec.Endpoints {
				if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					t.Errorf("ServiceMonitor %s: Service %s has no port %q", sm.Name, s.Name, ep.Port)
				}
				if ep.Port != "debug" || ep.Path != "/metrics" {
					t.Errorf("ServiceMonitor %s: scrape the debug port's /metrics, not %s %s", sm.Name, ep.Port, ep.Path)
				}
			}
		}
		if n != 1 {
			t.Errorf("ServiceMonitor %s selects %d Services, want 1", sm.Name, n)
		}
	}
	for _, s := range services {
		if !monitored[s.Name] {
			t.Errorf("Service %s has no ServiceMonitor", s.Name)
		}
	}
}

// TestPoolTLSWiring: every service of the pool runs mutual TLS by default
// (docs/adr/0008): its HANGAR_TLS_* files are the keys of its own Secret
// hangar-tls-<service>, mounted read-only, and nothing turns plaintext on.
func TestPoolTLSWiring(t *testing.T) {
	objs := build(t)
	want := map[string]struct {
		secret    string
		cert, key string
	}{
		"StatefulSet hangar-gateway": {"hangar-tls-gateway", "HANGAR_TLS_CERT", "HANGAR_TLS_KEY"},
		"Deployment hangar-policy":   {"hangar-tls-policy", "HANGAR_TLS_CERT", "HANGAR_TLS_KEY"},
		"Deployment hangar-logship":  {"hangar-tls-logship", "HANGAR_TLS_CERT", "HANGAR_TLS_KEY"},
		"DaemonSet hangar-executor":  {"hangar-tls-executor", "HANGAR_TLS_ENROLL_CERT", "HANGAR_TLS_ENROLL_KEY"},
	}
	seen := 0
	for _, w := range workloads(objs) {
		exp, ok := want[w.name]
		if !ok {
			continue
		}
		seen++
		pod := &w.template.Spec
		c := &pod.Containers[0]
		if e := envVar(c, "HANGAR_INSECURE_PLAINTEXT"); e != nil {
			t.Errorf("%s sets HANGAR_INSECURE_PLAINTEXT", w.name)
		}
		for envName, key := range map[string]string{"HANGAR_TLS_CA": "ca.crt", exp.cert: "tls.crt", exp.key: "tls.key"} {
			e := envVar(c, envName)
			if e == nil {
				t.Errorf("%s: %s is not set", w.name, envName)
				continue
			}
			ok := false
			for _, m := range c.VolumeMounts {
				rel, err := filepath.Rel(m.MountPath, e.Value)
				if err != nil || strings.HasPrefix(rel, "..") || !m.ReadOnly {
					continue
				}
				for _, v := range pod.Volumes {
					if v.Name != m.Name || v.Secret == nil || v.Secret.SecretName != exp.secret {
						continue
					}
					for _, it := range v.Secret.Items {
						ok = ok || (it.Key == key && it.Path == rel)
					}
				}
			}
			if !ok {
				t.Errorf("%s: %s=%s is not the key %q of the Secret %s mounted read-only", w.name, envName, e.Value, key, exp.secret)
			}
		}
	}
	if seen != len(want) {
		t.Errorf("found %d of the %d pool services", seen, len(want))
	}
}
