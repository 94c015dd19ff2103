package daemon

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/logger"
)

type fakeControl struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeControl) add(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeControl) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeControl) NetworkDisconnect(_ context.Context, n string, o mobyclient.NetworkDisconnectOptions) (mobyclient.NetworkDisconnectResult, error) {
	f.add("detach " + n + " " + o.Container)
	return mobyclient.NetworkDisconnectResult{}, nil
}

func (f *fakeControl) ContainerPause(_ context.Context, id string, _ mobyclient.ContainerPauseOptions) (mobyclient.ContainerPauseResult, error) {
	f.add("pause " + id)
	return mobyclient.ContainerPauseResult{}, nil
}

func (f *fakeControl) ContainerKill(_ context.Context, id string, o mobyclient.ContainerKillOptions) (mobyclient.ContainerKillResult, error) {
	f.add("kill " + id + " " + o.Signal)
	return mobyclient.ContainerKillResult{}, nil
}

var _ admin.ContainerControl = (*fakeControl)(nil)

func TestUntrustedPolicyEachAction(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		policy string
		want   string // "" = no Docker call
	}{
		{PolicyOff, ""},
		{PolicyLog, ""},
		{PolicyPause, "pause " + id},
		{PolicyDetach, "detach " + agentnet.NameOf("", "a") + " " + id},
		{PolicyKill, "kill " + id + " KILL"},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			bus := overseer.New(nil)
			dk := &fakeControl{}
			contained := make(chan admin.AgentContained, 1)
			done := make(chan struct{}, 1)
			pol := &untrustedPolicy{action: tc.policy, contain: admin.DockerContainment{C: dk}, bus: bus, log: logger.Nop(), ctx: context.Background(), now: time.Now}
			unsub := bus.Subscribe("policy", isUntrusted, func(e overseer.Event) { pol.handle(e); done <- struct{}{} })
			defer unsub()
			unsub2 := bus.Subscribe("watch", nil, func(e overseer.Event) {
				if c, ok := e.(admin.AgentContained); ok {
					contained <- c
				}
			})
			defer unsub2()
			// A trusted-path event must not trigger anything.
			bus.Publish(agent.AgentRegistered{Subject: overseer.Subject{ContainerID: id}, Ok: true, At: time.Now()})
			bus.Publish(agent.AgentUntrusted{Subject: overseer.Subject{ContainerID: id, AgentName: "a"}, Reason: overseer.ReasonThumbprintMismatch, At: time.Now()})
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("policy never ran")
			}
			calls := dk.got()
			if tc.want == "" {
				if len(calls) != 0 {
					t.Fatalf("policy %s acted: %v", tc.policy, calls)
				}
				return
			}
			if len(calls) != 1 || calls[0] != tc.want {
				t.Fatalf("calls %v, want [%s]", calls, tc.want)
			}
			select {
			case c := <-contained:
				if c.By != "policy" || c.Action != tc.policy || c.ContainerID != id {
					t.Fatalf("event %+v", c)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no agent_contained event")
			}
		})
	}
}

func TestParseExecUser(t *testing.T) {
	for in, want := range map[string][2]uint32{"": {0, 0}, "root": {0, 0}, "1000": {1000, 1000}, "1000:50": {1000, 50}} {
		u, g, err := parseUser(in)
		if err != nil || u != want[0] || g != want[1] {
			t.Errorf("parseUser(%q) = %d:%d %v, want %v", in, u, g, err, want)
		}
	}
	for _, bad := range []string{"alice", "1000:staff", "-1", "1:2:3"} {
		if _, _, err := parseUser(bad); err == nil {
			t.Errorf("parseUser(%q) accepted", bad)
		}
	}
}

// Losing the registry makes every running agent report registry_row_lost;
// no containment policy may act on that (it would take every agent down
// for the CP's own data loss), while other reasons still trigger it.
func TestUntrustedPolicyIgnoresRegistryRowLost(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, action := range []string{PolicyPause, PolicyDetach, PolicyKill} {
		dk := &fakeControl{}
		pol := &untrustedPolicy{action: action, contain: admin.DockerContainment{C: dk}, bus: overseer.New(nil), log: logger.Nop(), ctx: context.Background(), now: time.Now}
		pol.handle(agent.AgentUntrusted{Subject: overseer.Subject{ContainerID: id}, Reason: overseer.ReasonRegistryRowLost, At: time.Now()})
		if calls := dk.got(); len(calls) != 0 {
			t.Fatalf("%s acted on registry_row_lost: %v", action, calls)
		}
		pol.handle(agent.AgentUntrusted{Subject: overseer.Subject{ContainerID: id}, Reason: overseer.ReasonRegisterFailed, At: time.Now()})
		if calls := dk.got(); len(calls) != 1 {
			t.Fatalf("%s did not act on register_failed: %v", action, calls)
		}
	}
}

// Metric labels come from fixed vocabularies, never event free text.
func TestMetricLabelsBounded(t *testing.T) {
	for in, want := range map[string]string{
		"peer closed": "peer_closed",
		"Unavailable: connection error: desc = \"transport: Error while dialing: dial tcp 10.0.0.2:7700\"": "unavailable",
		"Canceled: context canceled":       "canceled",
		"read tcp 10.0.0.1:4321->10.0.0.2": labelOther,
		"Bogus: x":                         labelOther,
	} {
		if got := sessionBreakLabel(in); got != want {
			t.Errorf("sessionBreakLabel(%q) = %q, want %q", in, got, want)
		}
	}
	if got := dialFailureLabel(agent.FailContainerGone); got != agent.FailContainerGone {
		t.Errorf("dialFailureLabel(container_gone) = %q", got)
	}
	if got := dialFailureLabel("10.0.0.2:7700 refused"); got != labelOther {
		t.Errorf("dialFailureLabel(free text) = %q", got)
	}
	if got := registerFailureLabel("agent-chosen text " + time.Now().String()); got != "agent_reported" {
		t.Errorf("registerFailureLabel(agent text) = %q", got)
	}
	if got := untrustedLabel(overseer.UntrustedReason("made_up")); got != labelOther {
		t.Errorf("untrustedLabel(unknown) = %q", got)
	}
	if got := untrustedLabel(overseer.ReasonRegistryRowLost); got != string(overseer.ReasonRegistryRowLost) {
		t.Errorf("untrustedLabel(row lost) = %q", got)
	}
	// Many distinct free-text reasons collapse onto a handful of series.
	m, err := newMetrics(overseer.New(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		m.observe(agent.SessionBroken{Subject: overseer.Subject{ContainerID: "c"}, Reason: "connection to 10.0.0." + strconv.Itoa(i) + " reset"})
		m.observe(agent.AgentRegistered{Subject: overseer.Subject{ContainerID: "c"}, Reason: "agent says " + strconv.Itoa(i)})
	}
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	for _, f := range fams {
		series[f.GetName()] = len(f.GetMetric())
	}
	if n := series["clawker_cp_session_breaks_total"]; n != 1 {
		t.Errorf("session break series = %d, want 1", n)
	}
	if n := series["clawker_cp_registrations_total"]; n != 1 {
		t.Errorf("registration series = %d, want 1", n)
	}
}
