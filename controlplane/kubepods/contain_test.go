package kubepods

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/kubeagent"
)

func TestContainmentOnPods(t *testing.T) {
	r := start(t, agentPod("alpha", uidA, "10.244.0.5", true), agentPod("beta", uidB, "10.244.0.6", true))
	c := r.p.Containment(r.cs.NetworkingV1())
	ctx := context.Background()
	pods := r.cs.CoreV1().Pods(testNS)

	// No policies to quarantine with: the detach is refused, not a no-op.
	if err := c.Detach(ctx, admin.Target{ContainerID: auth.PodWorkloadID(uidA)}); !errors.Is(err, kubeagent.ErrNotQuarantinable) {
		t.Fatalf("detach without the policies: %v, want ErrNotQuarantinable", err)
	}
	// An isolation policy that predates quarantine still admits contained
	// agents: refused too.
	old := kubeagent.IsolationPolicy(testNS, kubeagent.IPPeer(netip.MustParseAddr("10.0.0.1")), 7444)
	old.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{consts.LabelPurpose: consts.PurposeAgent}}
	nets := r.cs.NetworkingV1().NetworkPolicies(testNS)
	for _, pol := range []*networkingv1.NetworkPolicy{old, kubeagent.QuarantinePolicy(testNS)} {
		if _, err := nets.Create(ctx, pol, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Detach(ctx, admin.Target{ContainerID: auth.PodWorkloadID(uidA)}); !errors.Is(err, kubeagent.ErrNotQuarantinable) {
		t.Fatalf("detach with an old isolation policy: %v, want ErrNotQuarantinable", err)
	}
	if a, _ := pods.Get(ctx, "alpha", metav1.GetOptions{}); a.Labels[consts.LabelContained] != "" {
		t.Fatal("a refused detach labelled the pod")
	}
	if err := kubeagent.EnsureIsolation(ctx, r.cs.NetworkingV1(), kubeagent.IsolationPolicy(testNS, kubeagent.IPPeer(netip.MustParseAddr("10.0.0.1")), 7444)); err != nil {
		t.Fatal(err)
	}

	if err := c.Detach(ctx, admin.Target{ContainerID: auth.PodWorkloadID(uidA)}); err != nil {
		t.Fatal(err)
	}
	alpha, err := pods.Get(ctx, "alpha", metav1.GetOptions{})
	if err != nil || alpha.Labels[consts.LabelContained] != "network-detach" || alpha.Labels[consts.LabelAgent] != "alpha" {
		t.Fatalf("detach: labels %v, %v; want contained, the rest kept", alpha.Labels, err)
	}

	if err := c.Kill(ctx, admin.Target{ContainerID: auth.PodWorkloadID(uidB)}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Get(ctx, "beta", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("kill: beta still there (%v)", err)
	}

	if err := c.Pause(ctx, admin.Target{ContainerID: auth.PodWorkloadID(uidA)}); !errors.Is(err, admin.ErrUnsupported) {
		t.Fatalf("pause: %v, want ErrUnsupported", err)
	}
	if err := c.Kill(ctx, admin.Target{ContainerID: auth.PodWorkloadID(uidC)}); err == nil {
		t.Fatal("kill of an unknown agent succeeded")
	}
}
