package kubepods

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// Informer index names.
const (
	byPodIP    = "podIP"
	byWorkload = "workload"
)

// ErrNotSynced: the informer has not finished its first list, so an
// answer from it could miss pods. Callers retry.
var ErrNotSynced = errors.New("kubepods: pod informer not synced yet")

// Publisher is where pod transitions go (*overseer.Overseer).
type Publisher interface {
	Publish(e overseer.Event)
}

// Pods watches the purpose=agent pods of one namespace. The informer only
// nominates: identity is always confirmed against the API server (see
// LookupByIP), so a stale cache can miss a peer but never admit one.
type Pods struct {
	client    corev1client.PodsGetter
	namespace string
	selector  string
	log       *logger.Logger
	bus       Publisher

	informer cache.SharedIndexInformer
	handler  cache.ResourceEventHandlerRegistration

	mu   sync.Mutex
	seen map[types.UID]podState
	// firstLabels are each pod's labels when first seen: pod labels can be
	// patched on a live pod (Docker's cannot), so the opt-ins read from
	// them (credentials) keep what the pod was created with.
	firstLabels map[types.UID]map[string]string
	// watchErr is the informer's last list/watch failure ("" once a list
	// or watch succeeds again), for /healthz.
	watchErr string
}

// New builds the informer over namespace's agent pods; Run starts it.
// client is the core/v1 pods API only, so the CP links no other group's
// clients (corev1client.NewForConfig, or a clientset's CoreV1()).
func New(client corev1client.PodsGetter, namespace string, bus Publisher, log *logger.Logger) (*Pods, error) {
	if client == nil || bus == nil || namespace == "" {
		return nil, errors.New("kubepods: New needs a client, a bus and a namespace")
	}
	sel := labels.SelectorFromSet(labels.Set{consts.LabelPurpose: consts.PurposeAgent}).String()
	api := client.Pods(namespace)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = sel
			return api.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = sel
			return api.Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformer(lw, &corev1.Pod{}, 0, cache.Indexers{})
	if err := inf.AddIndexers(cache.Indexers{byPodIP: podIPs, byWorkload: workloadOf}); err != nil {
		return nil, fmt.Errorf("kubepods: indexers: %w", err)
	}
	p := &Pods{client: client, namespace: namespace, selector: sel, log: logger.OrNop(log), bus: bus,
		informer: inf, seen: map[types.UID]podState{}, firstLabels: map[types.UID]map[string]string{}}
	if err := inf.SetWatchErrorHandlerWithContext(p.onWatchError); err != nil {
		return nil, fmt.Errorf("kubepods: watch error handler: %w", err)
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerDetailedFuncs{
		AddFunc:    func(obj any, initial bool) { p.guard(func() { p.onAdd(obj, initial) }) },
		UpdateFunc: func(old, obj any) { p.guard(func() { p.onUpdate(old, obj) }) },
		DeleteFunc: func(obj any) { p.guard(func() { p.onDelete(obj) }) },
	})
	if err != nil {
		return nil, fmt.Errorf("kubepods: event handler: %w", err)
	}
	p.handler = reg
	return p, nil
}

// Run starts the informer and blocks until ctx ends. It returns early
// only if the first list never completes before ctx ends.
func (p *Pods) Run(ctx context.Context) error {
	go p.informer.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), p.Synced) {
		return fmt.Errorf("kubepods: first pod list: %w", ctx.Err())
	}
	p.log.Info().Str("event", "kube_pods_synced").Str("namespace", p.namespace).
		Int("pods", len(p.informer.GetStore().ListKeys())).Msg("agent pod informer synced")
	<-ctx.Done()
	return nil
}

// Synced reports whether the first list has been indexed and handled.
func (p *Pods) Synced() bool { return p.informer.HasSynced() && p.handler.HasSynced() }

// WaitSynced waits for the first list, at most until ctx ends.
func (p *Pods) WaitSynced(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), p.Synced)
}

// Health is "ok", "connecting" before the first list, or the last
// list/watch failure while the informer retries.
func (p *Pods) Health() string {
	p.mu.Lock()
	werr := p.watchErr
	p.mu.Unlock()
	switch {
	case werr != "":
		return "disconnected: " + werr
	case !p.Synced():
		return "connecting"
	}
	return "ok"
}

// onWatchError records a list/watch failure (an RBAC refusal, the API
// server gone); the reflector retries with backoff on its own.
func (p *Pods) onWatchError(_ context.Context, _ *cache.Reflector, err error) {
	p.mu.Lock()
	p.watchErr = err.Error()
	p.mu.Unlock()
	p.log.Warn().Str("event", "kube_pods_watch_failed").Err(err).Msg("agent pod list/watch failed; retrying")
}

// guard keeps a handler's panic from ending the CP: client-go re-panics
// out of its handler goroutines.
func (p *Pods) guard(fn func()) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error().Str("event", "kube_pods_handler_panic").Interface("panic", r).Msg("pod event handler panicked; event dropped")
		}
	}()
	fn()
}

// podIPs indexes a pod under each IP its status gives.
func podIPs(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil
	}
	var out []string
	for _, a := range pod.Status.PodIPs {
		if ip, err := netip.ParseAddr(a.IP); err == nil {
			out = append(out, ip.Unmap().String())
		}
	}
	if len(out) == 0 && pod.Status.PodIP != "" {
		if ip, err := netip.ParseAddr(pod.Status.PodIP); err == nil {
			out = append(out, ip.Unmap().String())
		}
	}
	return out, nil
}

// workloadOf indexes a pod under the workload ID that stands for it.
func workloadOf(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.UID == "" {
		return nil, nil
	}
	return []string{auth.PodWorkloadID(string(pod.UID))}, nil
}

// hasIP reports whether pod's status gives it ip.
func hasIP(pod *corev1.Pod, ip netip.Addr) bool {
	ips, _ := podIPs(pod)
	for _, s := range ips {
		if s == ip.String() {
			return true
		}
	}
	return false
}

// agentContainer returns the status of the pod's clawkerd container.
func agentContainer(pod *corev1.Pod) *corev1.ContainerStatus {
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == consts.PodAgentContainer {
			return &pod.Status.ContainerStatuses[i]
		}
	}
	return nil
}

// running reports whether the pod's clawkerd container runs, or is being
// started: the CP dials it from then on. The kubelet reports a started
// container only at its next relist (the generic PLEG's, up to 1 s
// later; every agent paid ~0.9 s of it), while the pod's IP and its
// finished init container are reported as the kubelet starts the agent
// container; the dialer's retries cover the ~0.1 s until clawkerd listens.
func running(pod *corev1.Pod) bool {
	cs := agentContainer(pod)
	switch {
	case cs == nil:
		return false
	case pod.Status.Phase == corev1.PodRunning && cs.State.Running != nil:
		return true
	}
	return starting(pod, cs)
}

// starting: the pod has its IP, every init container exited 0, and the
// kubelet is creating the agent container. It reports that as the
// default waiting reason: PodInitializing in a pod with init containers
// (clawker's), else ContainerCreating. A pull error or a bad config is
// another reason, and ends the dialing.
func starting(pod *corev1.Pod, cs *corev1.ContainerStatus) bool {
	if pod.Status.PodIP == "" || pod.Status.Phase != corev1.PodPending ||
		len(pod.Status.InitContainerStatuses) != len(pod.Spec.InitContainers) {
		return false
	}
	for _, ic := range pod.Status.InitContainerStatuses {
		if t := ic.State.Terminated; t == nil || t.ExitCode != 0 {
			return false
		}
	}
	w := cs.State.Waiting
	return w != nil && (w.Reason == "ContainerCreating" || w.Reason == "PodInitializing")
}

// eligible reports whether pod may own an agent peer IP at all: labelled
// purpose=agent, not on the node's network (its IP is the node's, shared
// with every host process), and not finished (a finished pod keeps its
// IP in status after the IP went back to the pool).
func eligible(pod *corev1.Pod) bool {
	if pod.Labels[consts.LabelPurpose] != consts.PurposeAgent || pod.Spec.HostNetwork {
		return false
	}
	return pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}
