package check

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"
)

// scheme knows the built-in kinds the manifests may use; a kind outside it
// (and outside the special cases of decodeStrict) is an error, not a skip.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, networkingv1.AddToScheme,
		policyv1.AddToScheme, rbacv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// ServiceMonitor mirrors the part of the Prometheus Operator's
// monitoring.coreos.com/v1 ServiceMonitor that Hangar's manifests use.
//
// k8s.io/api has no type for this CRD, and the operator's own Go module
// (github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring)
// brings a large dependency tree for one kind. Decoding strictly into this
// mirror keeps the property that matters: a misspelt or misplaced field is an
// error. Its cost is deliberate: a valid ServiceMonitor field that Hangar does
// not use yet fails until it is added here, checked against the CRD's
// reference (field names and json tags below are the CRD's).
type ServiceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ServiceMonitorSpec `json:"spec"`
}

// ServiceMonitorSpec is the used subset of the ServiceMonitor's spec.
type ServiceMonitorSpec struct {
	JobLabel          string               `json:"jobLabel,omitempty"`
	Selector          metav1.LabelSelector `json:"selector"`
	NamespaceSelector *NamespaceSelector   `json:"namespaceSelector,omitempty"`
	Endpoints         []Endpoint           `json:"endpoints"`
}

// NamespaceSelector is the ServiceMonitor's namespaceSelector.
type NamespaceSelector struct {
	Any        bool     `json:"any,omitempty"`
	MatchNames []string `json:"matchNames,omitempty"`
}

// Endpoint is one scraped endpoint of a ServiceMonitor.
type Endpoint struct {
	Port          string `json:"port,omitempty"`
	Path          string `json:"path,omitempty"`
	Scheme        string `json:"scheme,omitempty"`
	Interval      string `json:"interval,omitempty"`
	ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
	HonorLabels   bool   `json:"honorLabels,omitempty"`
}

var serviceMonitorGVK = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"}

// ScaledObject mirrors the part of KEDA's keda.sh/v1alpha1 ScaledObject that
// deploy/k8s/examples uses (same reasons as ServiceMonitor: a misspelt
// field is an error; field names and json tags are the CRD's).
type ScaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ScaledObjectSpec `json:"spec"`
}

// ScaledObjectSpec is the used subset of the ScaledObject's spec.
type ScaledObjectSpec struct {
	ScaleTargetRef  ScaleTarget    `json:"scaleTargetRef"`
	PollingInterval *int32         `json:"pollingInterval,omitempty"`
	CooldownPeriod  *int32         `json:"cooldownPeriod,omitempty"`
	MinReplicaCount *int32         `json:"minReplicaCount,omitempty"`
	MaxReplicaCount *int32         `json:"maxReplicaCount,omitempty"`
	Triggers        []ScaleTrigger `json:"triggers"`
}

// ScaleTarget is the ScaledObject's scaleTargetRef.
type ScaleTarget struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
	Name       string `json:"name"`
}

// ScaleTrigger is one trigger; metadata is free-form per scaler type.
type ScaleTrigger struct {
	Type     string            `json:"type"`
	Name     string            `json:"name,omitempty"`
	Metadata map[string]string `json:"metadata"`
}

var scaledObjectGVK = schema.GroupVersionKind{Group: "keda.sh", Version: "v1alpha1", Kind: "ScaledObject"}

// object is one decoded manifest document.
type object struct {
	source string // file and document index, for messages
	gvk    schema.GroupVersionKind
	meta   metav1.Object
	obj    any // a typed k8s.io/api object, *ServiceMonitor or *types.Kustomization
}

// splitDocuments returns the non-empty YAML documents of data (a document of
// comments only is empty).
func splitDocuments(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if isEmptyDocument(doc) {
			continue
		}
		docs = append(docs, doc)
	}
}

func isEmptyDocument(doc []byte) bool {
	for line := range strings.SplitSeq(string(doc), "\n") {
		t := strings.TrimSpace(line)
		if t != "" && t != "---" && !strings.HasPrefix(t, "#") {
			return false
		}
	}
	return true
}

// decodeStrict decodes one document into the type its apiVersion and kind
// name, refusing unknown and duplicate fields.
func decodeStrict(source string, doc []byte) (*object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, fmt.Errorf("%s: reading apiVersion/kind: %w", source, err)
	}
	if tm.APIVersion == "" || tm.Kind == "" {
		return nil, fmt.Errorf("%s: apiVersion and kind are required", source)
	}
	gv, err := schema.ParseGroupVersion(tm.APIVersion)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	gvk := gv.WithKind(tm.Kind)
	o := &object{source: source, gvk: gvk}
	switch {
	case gvk == serviceMonitorGVK:
		sm := &ServiceMonitor{}
		o.obj, o.meta = sm, sm
	case gvk == scaledObjectGVK:
		so := &ScaledObject{}
		o.obj, o.meta = so, so
	case gvk.Group == "kustomize.config.k8s.io" && gvk.Kind == "Kustomization":
		o.obj = &types.Kustomization{}
	default:
		ro, err := scheme.New(gvk)
		if err != nil {
			return nil, fmt.Errorf("%s: %s is not a kind these checks know: %w", source, gvk, err)
		}
		mo, ok := ro.(metav1.Object)
		if !ok {
			return nil, fmt.Errorf("%s: %s has no object metadata", source, gvk)
		}
		o.obj, o.meta = ro, mo
	}
	// sigs.k8s.io/yaml's UnmarshalStrict refuses unknown and duplicate
	// fields, but through encoding/json, which matches field names
	// case-insensitively: readOnlyRootFileSystem would pass (and be applied
	// by kubectl's client, then refused or dropped by the API server). The
	// second decoding is the API server's own: sigs.k8s.io/json, case-
	// sensitive, every strict check on.
	if err := yaml.UnmarshalStrict(doc, o.obj); err != nil {
		return nil, fmt.Errorf("%s: %s does not decode strictly: %w", source, gvk, err)
	}
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	fresh := reflect.New(reflect.TypeOf(o.obj).Elem()).Interface()
	strictErrs, err := kjson.UnmarshalStrict(js, fresh)
	if err == nil {
		err = errors.Join(strictErrs...)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %s does not decode strictly (case-sensitive): %w", source, gvk, err)
	}
	return o, nil
}
