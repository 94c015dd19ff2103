package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/logger"
)

const polID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// A slow, flooded or unreachable CP (and the CP's own registry) is never
// evidence against an agent: no action contains it for those reasons,
// neither from the event nor from the worldview. Identity reasons still
// contain.
func TestUntrustedPolicyAdvisoryReasonsNeverContain(t *testing.T) {
	advisory := []overseer.UntrustedReason{overseer.ReasonRegisterTransport, overseer.ReasonRegisterTimeout,
		overseer.ReasonRegisterCPUnavailable, overseer.ReasonRegistryError, overseer.ReasonRegistryRowLost,
		overseer.ReasonRegisterAssertionSpent}
	enforcing := []overseer.UntrustedReason{overseer.ReasonThumbprintMismatch, overseer.ReasonCNMismatch,
		overseer.ReasonPeerIPMismatch, overseer.ReasonChainInvalid, overseer.ReasonIdentityMismatch, overseer.ReasonRegisterFailed}
	for _, action := range []string{PolicyPause, PolicyDetach, PolicyKill} {
		for _, r := range advisory {
			dk := &fakeControl{}
			pol := newUntrustedPolicy(context.Background(), action, admin.DockerContainment{C: dk}, overseer.New(nil), logger.Nop())
			pol.handle(agent.AgentUntrusted{Subject: overseer.Subject{ContainerID: polID}, Reason: r, At: time.Now()})
			bus := overseer.New(nil)
			bus.Publish(agent.SessionConnected{Subject: overseer.Subject{ContainerID: polID}, At: time.Now()})
			bus.Publish(agent.AgentUntrusted{Subject: overseer.Subject{ContainerID: polID}, Reason: r, At: time.Now()})
			pol.ReconcileWorldview(context.Background(), bus.Snapshot())
			if calls := dk.got(); len(calls) != 0 {
				t.Fatalf("%s contained on advisory %s: %v", action, r, calls)
			}
		}
		for _, r := range enforcing {
			dk := &fakeControl{}
			pol := newUntrustedPolicy(context.Background(), action, admin.DockerContainment{C: dk}, overseer.New(nil), logger.Nop())
			pol.handle(agent.AgentUntrusted{Subject: overseer.Subject{ContainerID: polID}, Reason: r, At: time.Now()})
			if calls := dk.got(); len(calls) != 1 {
				t.Fatalf("%s did not contain on %s: %v", action, r, calls)
			}
		}
	}
}

// untrustedWorldview is a bus whose worldview holds one connected agent
// with reasons, published with no policy subscribed: the policy never
// receives the AgentUntrusted events, as when the bus drops them.
func untrustedWorldview(reasons ...overseer.UntrustedReason) *overseer.Overseer {
	bus := overseer.New(nil)
	bus.Publish(agent.SessionConnected{Subject: overseer.Subject{ContainerID: polID, AgentName: "alice", Project: "web"}, At: time.Now()})
	for _, r := range reasons {
		bus.Publish(agent.AgentUntrusted{Subject: overseer.Subject{ContainerID: polID, AgentName: "alice", Project: "web"}, Reason: r, At: time.Now()})
	}
	return bus
}

// A dropped AgentUntrusted is healed on the next reconcile from the
// worldview, once: later passes do not contain the agent again, logged as
// event=untrusted_policy_reapplied.
func TestUntrustedPolicyHealsDroppedEventFromWorldview(t *testing.T) {
	var buf logger.SyncBuffer
	dk := &fakeControl{}
	bus := untrustedWorldview(overseer.ReasonRegisterCPUnavailable, overseer.ReasonThumbprintMismatch)
	contained := make(chan struct{}, 4)
	defer bus.Subscribe("watch", func(e overseer.Event) bool { return e.EventName() == "agent_contained" },
		func(overseer.Event) { contained <- struct{}{} })()
	pol := newUntrustedPolicy(context.Background(), PolicyPause, admin.DockerContainment{C: dk}, bus, logger.New(&buf, "debug", "test"))

	for i := 0; i < 3; i++ {
		pol.ReconcileWorldview(context.Background(), bus.Snapshot())
	}
	if calls := dk.got(); len(calls) != 1 || calls[0] != "pause "+polID {
		t.Fatalf("calls %v, want one pause", calls)
	}
	select {
	case <-contained:
	case <-time.After(5 * time.Second):
		t.Fatal("no agent_contained event from the reconcile path")
	}
	logs := buf.String()
	if strings.Count(logs, `"event":"untrusted_policy_reapplied"`) != 1 ||
		!strings.Contains(logs, string(overseer.ReasonThumbprintMismatch)) {
		t.Fatalf("want one untrusted_policy_reapplied line naming the enforcing reason:\n%s", logs)
	}

	// The event arriving late (delayed, not dropped) does not contain twice.
	pol.handle(agent.AgentUntrusted{Subject: overseer.Subject{ContainerID: polID}, Reason: overseer.ReasonThumbprintMismatch, At: time.Now().Add(-time.Second)})
	if calls := dk.got(); len(calls) != 1 {
		t.Fatalf("late event contained again: %v", calls)
	}

	// A new Session that is untrusted again is a new outcome: contained again.
	bus.Publish(agent.SessionConnected{Subject: overseer.Subject{ContainerID: polID}, At: time.Now()})
	bus.Publish(agent.AgentUntrusted{Subject: overseer.Subject{ContainerID: polID}, Reason: overseer.ReasonChainInvalid, At: time.Now()})
	pol.ReconcileWorldview(context.Background(), bus.Snapshot())
	pol.ReconcileWorldview(context.Background(), bus.Snapshot())
	if calls := dk.got(); len(calls) != 2 {
		t.Fatalf("second untrusted Session: calls %v, want 2", calls)
	}
}

// The event path and the reconcile path share one record: an agent the
// event path contained is not contained again by reconcile.
func TestUntrustedPolicyEventThenReconcileContainsOnce(t *testing.T) {
	dk := &fakeControl{}
	bus := untrustedWorldview(overseer.ReasonCNMismatch)
	pol := newUntrustedPolicy(context.Background(), PolicyKill, admin.DockerContainment{C: dk}, bus, logger.Nop())
	pol.handle(agent.AgentUntrusted{Subject: overseer.Subject{ContainerID: polID}, Reason: overseer.ReasonCNMismatch, At: time.Now()})
	pol.ReconcileWorldview(context.Background(), bus.Snapshot())
	if calls := dk.got(); len(calls) != 1 {
		t.Fatalf("calls %v, want one kill", calls)
	}
}

// failOnceControl fails its first pause (Docker hiccup), then succeeds.
type failOnceControl struct {
	fakeControl
	failed bool
}

func (f *failOnceControl) ContainerPause(ctx context.Context, id string, o mobyclient.ContainerPauseOptions) (mobyclient.ContainerPauseResult, error) {
	f.mu.Lock()
	first := !f.failed
	f.failed = true
	f.mu.Unlock()
	if first {
		return mobyclient.ContainerPauseResult{}, errors.New("docker: timeout")
	}
	return f.fakeControl.ContainerPause(ctx, id, o)
}

// A containment that failed on the event path is retried by the next
// reconcile; a stopped container (closed Session) and a destroyed one
// (gone from the worldview) are left alone.
func TestUntrustedPolicyReconcileRetriesFailuresSkipsStopped(t *testing.T) {
	dk := &failOnceControl{}
	bus := untrustedWorldview(overseer.ReasonThumbprintMismatch)
	pol := newUntrustedPolicy(context.Background(), PolicyPause, admin.DockerContainment{C: dk}, bus, logger.Nop())
	pol.handle(agent.AgentUntrusted{Subject: overseer.Subject{ContainerID: polID}, Reason: overseer.ReasonThumbprintMismatch, At: time.Now()})
	if calls := dk.got(); len(calls) != 0 {
		t.Fatalf("calls %v", calls)
	}
	pol.ReconcileWorldview(context.Background(), bus.Snapshot())
	if calls := dk.got(); len(calls) != 1 {
		t.Fatalf("reconcile did not retry the failed containment: %v", calls)
	}

	stopped := untrustedWorldview(overseer.ReasonThumbprintMismatch)
	stopped.Publish(agent.SessionClosed{Subject: overseer.Subject{ContainerID: polID}, Reason: "container stopped", At: time.Now()})
	dk2 := &fakeControl{}
	pol2 := newUntrustedPolicy(context.Background(), PolicyPause, admin.DockerContainment{C: dk2}, stopped, logger.Nop())
	pol2.ReconcileWorldview(context.Background(), stopped.Snapshot())
	if calls := dk2.got(); len(calls) != 0 {
		t.Fatalf("contained a stopped container: %v", calls)
	}

	// Destroyed containers leave the policy's record (bounded memory).
	pol.ReconcileWorldview(context.Background(), overseer.NewState())
	pol.mu.Lock()
	n := len(pol.handled)
	pol.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d records kept for destroyed containers", n)
	}
}

// The new reasons are metric labels of their own, not "other".
func TestMetricLabelsRegisterFailures(t *testing.T) {
	for _, r := range []overseer.UntrustedReason{overseer.ReasonRegisterTransport, overseer.ReasonRegisterTimeout,
		overseer.ReasonRegisterCPUnavailable, overseer.ReasonRegisterAssertionSpent} {
		if got := untrustedLabel(r); got != string(r) {
			t.Errorf("untrustedLabel(%s) = %q", r, got)
		}
	}
	if got := registerFailureLabel("no RegisterDone within 1m0s: context deadline exceeded"); got != "no_reply" {
		t.Errorf("registerFailureLabel(timeout) = %q", got)
	}
	if got := registerFailureLabel("await RegisterDone: rpc error: code = Unavailable"); got != "no_reply" {
		t.Errorf("registerFailureLabel(transport) = %q", got)
	}
}
