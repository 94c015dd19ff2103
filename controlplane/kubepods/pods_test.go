package kubepods

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/consts"
)

// The fake clientset stands in for the API server: the Kubernetes API is
// this package's runtime boundary, as the Docker API is peerid's.

const testNS = "clawker"

// agentPod is a purpose=agent pod; ip "" leaves it unscheduled, and
// running sets phase Running with the agent container running.
func agentPod(name, uid, ip string, isRunning bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS, UID: types.UID(uid), Labels: map[string]string{
			consts.LabelPurpose: consts.PurposeAgent, consts.LabelAgent: name, consts.LabelProject: "proj",
		}},
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
	if ip != "" {
		p.Status.PodIP = ip
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	if isRunning {
		setRunning(p, "containerd://c1")
	}
	return p
}

func setRunning(p *corev1.Pod, containerID string) {
	p.Status.Phase = corev1.PodRunning
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: consts.PodAgentContainer, ContainerID: containerID,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
}

// recorder is the bus: it keeps what was published.
type recorder struct {
	mu  sync.Mutex
	evs []dockerevents.DockerEvent
}

func (r *recorder) Publish(e overseer.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, e.(dockerevents.DockerEvent))
}

func (r *recorder) actions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.evs {
		out = append(out, e.Action)
	}
	return out
}

type rig struct {
	cs  *fake.Clientset
	p   *Pods
	bus *recorder
}

// start runs Pods over a fake API holding objs and returns once the
// informer has synced and its watch is open (so later writes are seen).
func start(t *testing.T, objs ...runtime.Object) *rig {
	t.Helper()
	cs := fake.NewClientset(objs...)
	watching := make(chan struct{})
	var once sync.Once
	cs.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) {
		once.Do(func() { close(watching) })
		return false, nil, nil
	})
	bus := &recorder{}
	p, err := New(cs.CoreV1(), testNS, bus, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "informer synced", p.Synced)
	select {
	case <-watching:
	case <-time.After(10 * time.Second):
		t.Fatal("pod watch never opened")
	}
	cs.ClearActions()
	return &rig{cs: cs, p: p, bus: bus}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// apiCalls counts the requests made since the last ClearActions, leaving
// out the informer's own watch.
func (r *rig) apiCalls() []string {
	var out []string
	for _, a := range r.cs.Actions() {
		if a.GetVerb() != "watch" {
			out = append(out, a.GetVerb()+" "+a.GetResource().Resource)
		}
	}
	return out
}
