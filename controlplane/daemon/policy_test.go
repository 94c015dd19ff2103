package daemon

import (
	"context"
	"sync"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/consts"
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
		{PolicyDetach, "detach " + consts.NetworkName + " " + id},
		{PolicyKill, "kill " + id + " KILL"},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			bus := overseer.New(nil)
			dk := &fakeControl{}
			contained := make(chan admin.AgentContained, 1)
			done := make(chan struct{}, 1)
			pol := &untrustedPolicy{action: tc.policy, docker: dk, bus: bus, log: logger.Nop(), ctx: context.Background(), now: time.Now}
			unsub := bus.Subscribe("policy", isUntrusted, func(e overseer.Event) { pol.handle(e); done <- struct{}{} })
			defer unsub()
			unsub2 := bus.Subscribe("watch", nil, func(e overseer.Event) {
				if c, ok := e.(admin.AgentContained); ok {
					contained <- c
				}
			})
			defer unsub2()
			// A trusted-path event must not trigger anything.
			bus.Publish(agent.AgentRegistered{ContainerID: id, Ok: true, At: time.Now()})
			bus.Publish(agent.AgentUntrusted{ContainerID: id, AgentName: "a", Reason: overseer.ReasonThumbprintMismatch, At: time.Now()})
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
