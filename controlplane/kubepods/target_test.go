package kubepods

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/internal/auth"
)

func TestDialTargetFromPod(t *testing.T) {
	r := start(t, agentPod("alpha", uidA, "10.244.0.5", true), agentPod("beta", uidB, "10.244.0.6", false))
	ctx := context.Background()
	got, err := r.p.DialTarget(ctx, auth.PodWorkloadID(uidA))
	if err != nil || got.Address != "10.244.0.5:7700" || got.AgentName != "alpha" || got.Project != "proj" {
		t.Fatalf("DialTarget = %+v, %v", got, err)
	}
	if _, err := r.p.DialTarget(ctx, auth.PodWorkloadID(uidB)); !errors.Is(err, agent.ErrContainerNotRunning) {
		t.Fatalf("pending pod: err = %v, want ErrContainerNotRunning", err)
	}
	if _, err := r.p.DialTarget(ctx, auth.PodWorkloadID(uidC)); !errors.Is(err, agent.ErrContainerGone) {
		t.Fatalf("unknown pod: err = %v, want ErrContainerGone", err)
	}
	if calls := r.apiCalls(); len(calls) != 0 {
		t.Fatalf("dial targets made API calls %v; the cache answers them", calls)
	}
}

func TestInventoryFromCache(t *testing.T) {
	r := start(t, agentPod("alpha", uidA, "10.244.0.5", true), agentPod("beta", uidB, "", false))
	all, run, err := r.p.AgentContainerInventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(all)
	wantAll := []string{auth.PodWorkloadID(uidA), auth.PodWorkloadID(uidB)}
	slices.Sort(wantAll)
	if !slices.Equal(all, wantAll) || !slices.Equal(run, []string{auth.PodWorkloadID(uidA)}) {
		t.Fatalf("inventory all=%v running=%v", all, run)
	}
	labels, err := r.p.ContainerLabels(context.Background(), auth.PodWorkloadID(uidB))
	if err != nil || labels["dev.clawker.agent"] != "beta" {
		t.Fatalf("labels = %v, %v", labels, err)
	}
}

func TestAnswersWaitForTheFirstList(t *testing.T) {
	p, err := New(start(t).cs.CoreV1(), testNS, &recorder{}, nil) // never run
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DialTarget(context.Background(), auth.PodWorkloadID(uidA)); !errors.Is(err, ErrNotSynced) {
		t.Fatalf("DialTarget before sync: %v, want ErrNotSynced", err)
	}
	if _, _, err := p.AgentContainerInventory(context.Background()); !errors.Is(err, ErrNotSynced) {
		t.Fatalf("inventory before sync: %v, want ErrNotSynced", err)
	}
}
