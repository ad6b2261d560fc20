package kubert

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
)

// tracker follows one pod through a watch, re-opened from the last resource
// version seen whenever the API server ends it (and re-read with a Get when
// that version has expired), and lets callers wait for a condition on it.
type tracker struct {
	pods typedcorev1.PodInterface
	name string

	mu      sync.Mutex
	pod     *corev1.Pod
	gone    bool          // the pod was deleted
	changed chan struct{} // closed and replaced at every change
}

func newTracker(pods typedcorev1.PodInterface, pod *corev1.Pod) *tracker {
	return &tracker{pods: pods, name: pod.Name, pod: pod, changed: make(chan struct{})}
}

func (t *tracker) set(pod *corev1.Pod, gone bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if pod != nil {
		t.pod = pod
	}
	t.gone = t.gone || gone
	close(t.changed)
	t.changed = make(chan struct{})
}

// current returns the last state seen, whether the pod is gone, and a
// channel closed at the next change.
func (t *tracker) current() (*corev1.Pod, bool, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pod, t.gone, t.changed
}

// run follows the pod until ctx ends or the pod is deleted.
func (t *tracker) run(ctx context.Context) {
	rv := ""
	if p, _, _ := t.current(); p != nil {
		rv = p.ResourceVersion
	}
	for ctx.Err() == nil {
		if rv == "" {
			p, err := t.pods.Get(ctx, t.name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				t.set(nil, true)
				return
			case err != nil:
				sleep(ctx, time.Second)
				continue
			}
			t.set(p, false)
			rv = p.ResourceVersion
		}
		w, err := t.pods.Watch(ctx, metav1.ListOptions{
			FieldSelector:   fields.OneTermEqualSelector("metadata.name", t.name).String(),
			ResourceVersion: rv,
		})
		if err != nil {
			if apierrors.IsGone(err) || apierrors.IsResourceExpired(err) {
				rv = ""
			}
			sleep(ctx, time.Second)
			continue
		}
		rv = t.consume(w, rv)
		w.Stop()
		if _, gone, _ := t.current(); gone {
			return
		}
	}
}

// consume reads a watch to its end and returns the resource version to
// re-open it from ("" to re-read the pod first).
func (t *tracker) consume(w watch.Interface, rv string) string {
	for ev := range w.ResultChan() {
		switch ev.Type {
		case watch.Added, watch.Modified:
			if p, ok := ev.Object.(*corev1.Pod); ok {
				t.set(p, false)
				rv = p.ResourceVersion
			}
		case watch.Deleted:
			if p, ok := ev.Object.(*corev1.Pod); ok {
				t.set(p, true)
			} else {
				t.set(nil, true)
			}
			return rv
		case watch.Error:
			return "" // typically "too old resource version": re-read
		}
	}
	return rv
}

// wait returns when cond holds for the pod (or the pod is gone and cond
// says so), or when ctx ends.
func (t *tracker) wait(ctx context.Context, cond func(pod *corev1.Pod, gone bool) bool) error {
	for {
		pod, gone, changed := t.current()
		if cond(pod, gone) {
			return nil
		}
		if gone {
			return errPodGone
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
}
