package kubepods

import (
	"context"
	"errors"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
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

// setStarting is the status the kubelet reports as it starts the agent
// container: the init container done, the agent container being created.
func setStarting(p *corev1.Pod, initExit int32, reason string) {
	p.Spec.InitContainers = []corev1.Container{{Name: "clawkerd-install"}}
	p.Status.Phase = corev1.PodPending
	p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "clawkerd-install",
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: initExit}}}}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: consts.PodAgentContainer,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}}}
}

// A pod whose agent container is being created is started: the CP dials it
// then, not a kubelet relist later. Its container then running is no
// restart; a pull failure instead ends it.
func TestFeedStartsAPodAsItsAgentContainerIsCreated(t *testing.T) {
	r := start(t)
	pods := r.cs.CoreV1().Pods(testNS)
	ctx := context.Background()
	want := func(what string, actions ...string) {
		t.Helper()
		waitFor(t, what, func() bool { return slices.Equal(r.bus.actions(), actions) })
	}
	p := agentPod("alpha", uidA, "10.244.0.5", false)
	setStarting(p, 0, "PodInitializing")
	p.Status.InitContainerStatuses[0].State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("create while initialising", "create")
	id := auth.PodWorkloadID(uidA)
	if _, err := r.p.DialTarget(ctx, id); !errors.Is(err, agent.ErrContainerNotRunning) {
		t.Fatalf("dial target while the init container runs: %v, want not running", err)
	}

	// What the kubelet reports for a pod with init containers once they
	// are done and it creates (or pulls the image of) the agent container.
	setStarting(p, 0, "PodInitializing")
	if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("start as the agent container is created", "create", "start")
	if got, err := r.p.DialTarget(ctx, id); err != nil || got.Address != "10.244.0.5:7700" {
		t.Fatalf("dial target while starting: %+v, %v", got, err)
	}
	setRunning(p, "containerd://first")
	if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("running repeats the start, with no die", "create", "start", "start")

	// beta's events after alpha's update are the barrier: anything more
	// from alpha would show before them. A pod without init containers
	// waits as ContainerCreating.
	beta := agentPod("beta", uidB, "10.244.0.6", false)
	setStarting(beta, 0, "ContainerCreating")
	beta.Spec.InitContainers, beta.Status.InitContainerStatuses = nil, nil
	if _, err := pods.Create(ctx, beta, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("beta starts", "create", "start", "start", "create", "start")
	setStarting(beta, 0, "ErrImagePull")
	if _, err := pods.UpdateStatus(ctx, beta, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("a pull failure ends beta", "create", "start", "start", "create", "start", "die")

	gamma := agentPod("gamma", uidC, "10.244.0.7", false)
	setStarting(gamma, 1, "PodInitializing") // clawkerd install failed
	if _, err := pods.Create(ctx, gamma, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// delta's create is the barrier behind gamma's events.
	if _, err := pods.Create(ctx, agentPod("delta", uidD, "", false), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("a failed init container never starts", "create", "start", "start", "create", "start", "die", "create", "create")
}
