package kubepods

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/internal/auth"
)

func TestFeedPublishesPodTransitions(t *testing.T) {
	// A pod present at the first list seeds the baseline: no events.
	r := start(t, agentPod("old", uidC, "10.244.0.9", true))
	pods := r.cs.CoreV1().Pods(testNS)
	ctx := context.Background()
	want := func(what string, actions ...string) {
		t.Helper()
		waitFor(t, what, func() bool { return slices.Equal(r.bus.actions(), actions) })
	}

	p := agentPod("alpha", uidA, "", false)
	if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("create", "create")

	p.Status.PodIP = "10.244.0.5"
	setRunning(p, "containerd://first")
	if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("start", "create", "start")

	// The kubelet restarted the container between two observations.
	setRunning(p, "containerd://second")
	if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("restart as die+start", "create", "start", "die", "start")

	p.Status.Phase = corev1.PodFailed
	p.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 3}}
	if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("die", "create", "start", "die", "start", "die")

	if err := pods.Delete(ctx, "alpha", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want("destroy", "create", "start", "die", "start", "die", "destroy")

	r.bus.mu.Lock()
	defer r.bus.mu.Unlock()
	for _, e := range r.bus.evs {
		if e.ContainerID != auth.PodWorkloadID(uidA) || e.Labels["name"] != "alpha" || !e.IsAgent() || e.Synthesized {
			t.Fatalf("event %+v: want alpha's workload ID, name and agent labels, not synthesized", e)
		}
	}
	if die := r.bus.evs[4]; die.Action != dockerevents.ActionDie || die.Labels["exitCode"] != "3" {
		t.Fatalf("die event %+v, want exitCode 3", die)
	}
}

// Deleting a running pod ends its Session (die) before it is forgotten.
func TestFeedDeleteOfRunningPodDiesFirst(t *testing.T) {
	r := start(t)
	pods := r.cs.CoreV1().Pods(testNS)
	ctx := context.Background()
	if _, err := pods.Create(ctx, agentPod("alpha", uidA, "10.244.0.5", true), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "start", func() bool { return slices.Equal(r.bus.actions(), []string{"create", "start"}) })
	if err := pods.Delete(ctx, "alpha", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "die then destroy", func() bool {
		return slices.Equal(r.bus.actions(), []string{"create", "start", "die", "destroy"})
	})
}
