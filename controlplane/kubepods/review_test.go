package kubepods

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/clawker/clawker/controlplane/peerid"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// Identity is the API server's answer, not the cache's: labels patched
// since the informer saw the pod are what the lookup returns.
func TestLookupIdentityFromTheGet(t *testing.T) {
	r := start(t, agentPod("alpha", uidA, "10.244.0.5", true))
	relabelled := agentPod("alpha", uidA, "10.244.0.5", true)
	relabelled.Labels[consts.LabelAgent] = "renamed"
	r.cs.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, relabelled, nil
	})
	got, err := r.p.LookupByIP(context.Background(), netip.MustParseAddr("10.244.0.5"))
	if err != nil || got.AgentName.String() != "renamed" {
		t.Fatalf("resolved %+v, %v; want the GET's labels", got, err)
	}
}

// A GET that fails for any reason but NotFound fails the lookup closed,
// without a second call.
func TestLookupGetErrorFailsClosed(t *testing.T) {
	r := start(t, agentPod("alpha", uidA, "10.244.0.5", true))
	r.cs.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("etcd timeout")
	})
	if _, err := r.p.LookupByIP(context.Background(), netip.MustParseAddr("10.244.0.5")); err == nil || !strings.Contains(err.Error(), "etcd timeout") {
		t.Fatalf("err = %v, want the GET's failure", err)
	}
	if calls := r.apiCalls(); len(calls) != 1 {
		t.Fatalf("calls %v, want the one GET", calls)
	}
}

// The same pod, now at another IP: the cached nomination is stale, and the
// fresh list finds no owner of the old IP.
func TestLookupPodMovedIsAMiss(t *testing.T) {
	r := start(t, agentPod("alpha", uidA, "10.244.0.5", true))
	moved := agentPod("alpha", uidA, "10.244.0.8", true)
	r.cs.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) { return true, moved, nil })
	r.cs.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) { return true, podList(moved), nil })
	if _, err := r.p.LookupByIP(context.Background(), netip.MustParseAddr("10.244.0.5")); !errors.Is(err, peerid.ErrNoContainerForPeerIP) {
		t.Fatalf("err = %v, want ErrNoContainerForPeerIP", err)
	}
}

// A pod that only lost the agent label leaves the watch as "deleted": its
// Session ends (die) but it is not destroyed. A relist tombstone of a pod
// that is really gone is a synthesized die + destroy.
func TestFeedDeleteKeepsALivePodAndSynthesizesTombstones(t *testing.T) {
	alpha := agentPod("alpha", uidA, "10.244.0.5", true)
	r := start(t, alpha)
	r.p.onDelete(alpha)
	if got := r.bus.actions(); !slices.Equal(got, []string{"die"}) {
		t.Fatalf("label removed from a live pod: %v, want die only", got)
	}
	if err := r.cs.CoreV1().Pods(testNS).Delete(context.Background(), "alpha", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The watch's own delete lands first; only then is the tombstone fed.
	waitFor(t, "the watched delete", func() bool { return slices.Equal(r.bus.actions(), []string{"die", "destroy"}) })
	r.bus.mu.Lock()
	r.bus.evs = nil
	r.bus.mu.Unlock()
	r.p.mu.Lock()
	r.p.seen[alpha.UID] = podState{running: true}
	r.p.mu.Unlock()
	r.p.onDelete(cache.DeletedFinalStateUnknown{Key: testNS + "/alpha", Obj: alpha})
	r.bus.mu.Lock()
	defer r.bus.mu.Unlock()
	if len(r.bus.evs) != 2 || r.bus.evs[0].Action != "die" || r.bus.evs[1].Action != "destroy" ||
		!r.bus.evs[0].Synthesized || !r.bus.evs[1].Synthesized {
		t.Fatalf("tombstone: %+v, want synthesized die and destroy", r.bus.evs)
	}
}

// Credential opt-ins come from the labels the pod was first seen with.
func TestContainerLabelsAsFirstSeen(t *testing.T) {
	alpha := agentPod("alpha", uidA, "10.244.0.5", true)
	r := start(t, alpha)
	patched := alpha.DeepCopy()
	patched.Labels[consts.LabelCredentials] = "ssh-agent"
	if _, err := r.cs.CoreV1().Pods(testNS).Update(context.Background(), patched, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	id := auth.PodWorkloadID(uidA)
	waitFor(t, "the patch in the cache", func() bool {
		pod, _ := r.p.byID(id)
		return pod != nil && pod.Labels[consts.LabelCredentials] != ""
	})
	labels, err := r.p.ContainerLabels(context.Background(), id)
	if err != nil || labels[consts.LabelCredentials] != "" {
		t.Fatalf("labels %v, %v: a patch opted a live pod in", labels, err)
	}
}

// A list the API server refuses shows on /healthz, not as "connecting".
func TestHealthReportsListFailures(t *testing.T) {
	cs := fake.NewClientset()
	cs.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New(`pods is forbidden: User "clawker-cp" cannot list resource "pods"`)
	})
	p, err := New(cs.CoreV1(), testNS, &recorder{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "the failure on health", func() bool {
		h := p.Health()
		return strings.HasPrefix(h, "disconnected: ") && strings.Contains(h, "pods is forbidden")
	})
	if p.Synced() {
		t.Fatal("synced without a list")
	}
}
