package kubepods

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/clawker/clawker/controlplane/peerid"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

const (
	uidA = "00000000-0000-4000-8000-00000000000a"
	uidB = "00000000-0000-4000-8000-00000000000b"
	uidC = "00000000-0000-4000-8000-00000000000c"
	uidD = "00000000-0000-4000-8000-00000000000d"
)

func TestLookupByIPOneGetPerLookup(t *testing.T) {
	r := start(t, agentPod("alpha", uidA, "10.244.0.5", true), agentPod("beta", uidB, "10.244.0.6", true),
		agentPod("gamma", uidC, "10.244.0.7", true))
	for range 3 {
		got, err := r.p.LookupByIP(context.Background(), netip.MustParseAddr("10.244.0.6"))
		if err != nil {
			t.Fatal(err)
		}
		if got.ContainerID != auth.PodWorkloadID(uidB) || got.AgentName.String() != "beta" || got.Project.String() != "proj" {
			t.Fatalf("resolved %+v, want beta's pod", got)
		}
	}
	if calls := r.apiCalls(); len(calls) != 3 || calls[0] != "get pods" {
		t.Fatalf("API calls for 3 lookups = %v, want one get each", calls)
	}
}

func TestLookupAmbiguousIPFailsClosed(t *testing.T) {
	r := start(t, agentPod("alpha", uidA, "10.244.0.5", true), agentPod("beta", uidB, "10.244.0.5", true))
	_, err := r.p.LookupByIP(context.Background(), netip.MustParseAddr("10.244.0.5"))
	if !errors.Is(err, peerid.ErrAmbiguousPeerIP) {
		t.Fatalf("err = %v, want ErrAmbiguousPeerIP", err)
	}
}

// A finished pod keeps its IP in status after the IP went back to the
// pool, and a host-network pod's IP is the node's: neither owns a peer IP.
func TestLookupIgnoresFinishedAndHostNetworkPods(t *testing.T) {
	done := agentPod("old", uidA, "10.244.0.5", false)
	done.Status.Phase = "Succeeded"
	host := agentPod("host", uidC, "10.244.0.5", true)
	host.Spec.HostNetwork = true
	r := start(t, done, host, agentPod("new", uidB, "10.244.0.5", true))
	got, err := r.p.LookupByIP(context.Background(), netip.MustParseAddr("10.244.0.5"))
	if err != nil || got.ContainerID != auth.PodWorkloadID(uidB) {
		t.Fatalf("resolved %+v, %v; want the new pod", got, err)
	}
	host2 := agentPod("host2", uidA, "10.244.0.9", true)
	host2.Spec.HostNetwork = true
	r = start(t, host2)
	if _, err := r.p.LookupByIP(context.Background(), netip.MustParseAddr("10.244.0.9")); !errors.Is(err, peerid.ErrNoContainerForPeerIP) {
		t.Fatalf("host-network pod: err = %v, want ErrNoContainerForPeerIP", err)
	}
}

// The cache names a pod whose IP the API server now gives to another pod
// (same name, new UID): identity follows the API server, not the cache.
func TestLookupStaleCacheAsksAfresh(t *testing.T) {
	r := start(t, agentPod("alpha", uidA, "10.244.0.5", true))
	reused := agentPod("alpha", uidB, "10.244.0.5", true)
	r.cs.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, reused, nil
	})
	r.cs.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, podList(reused), nil
	})
	got, err := r.p.LookupByIP(context.Background(), netip.MustParseAddr("10.244.0.5"))
	if err != nil || got.ContainerID != auth.PodWorkloadID(uidB) {
		t.Fatalf("resolved %+v, %v; want the pod that now holds the IP", got, err)
	}
	if calls := r.apiCalls(); len(calls) != 2 {
		t.Fatalf("API calls = %v, want get then list", calls)
	}
}

func TestLookupUnknownIPAndBadLabels(t *testing.T) {
	bad := agentPod("alpha", uidA, "10.244.0.5", true)
	bad.Labels[consts.LabelAgent] = "Not A Name!"
	r := start(t, bad)
	if _, err := r.p.LookupByIP(context.Background(), netip.MustParseAddr("10.244.0.5")); !errors.Is(err, peerid.ErrInvalidAgentLabel) {
		t.Fatalf("bad label: err = %v, want ErrInvalidAgentLabel", err)
	}
	r.cs.ClearActions()
	if _, err := r.p.LookupByIP(context.Background(), netip.MustParseAddr("10.244.9.9")); !errors.Is(err, peerid.ErrNoContainerForPeerIP) {
		t.Fatalf("unknown IP: err = %v, want ErrNoContainerForPeerIP", err)
	}
	if calls := r.apiCalls(); len(calls) != 1 || calls[0] != "list pods" {
		t.Fatalf("unknown IP made %v, want one list", calls)
	}
}

func TestLookupListsByPodIPAndAgentLabel(t *testing.T) {
	r := start(t)
	_, _ = r.p.LookupByIP(context.Background(), netip.MustParseAddr("10.244.1.1"))
	for _, a := range r.cs.Actions() {
		if l, ok := a.(k8stesting.ListAction); ok {
			res := l.GetListRestrictions()
			if res.Fields.String() != "status.podIP=10.244.1.1" || res.Labels.String() != consts.LabelPurpose+"="+consts.PurposeAgent {
				t.Fatalf("list restrictions %v / %v", res.Fields, res.Labels)
			}
			return
		}
	}
	t.Fatal("no list made")
}

func podList(pods ...*corev1.Pod) runtime.Object {
	l := &corev1.PodList{}
	for _, p := range pods {
		l.Items = append(l.Items, *p)
	}
	return l
}
