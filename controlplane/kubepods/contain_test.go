package kubepods

import (
	"context"
	"errors"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

func TestContainmentOnPods(t *testing.T) {
	r := start(t, agentPod("alpha", uidA, "10.244.0.5", true), agentPod("beta", uidB, "10.244.0.6", true))
	c := r.p.Containment()
	ctx := context.Background()
	pods := r.cs.CoreV1().Pods(testNS)

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
