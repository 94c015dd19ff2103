package admin

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/logger"
)

const (
	idA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	idB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	idC = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
)

type fakeRegistry struct {
	rows      []agent.Entry
	err       error
	mu        sync.Mutex
	snapshots int
}

func (f *fakeRegistry) Snapshot() ([]agent.Entry, error) {
	f.mu.Lock()
	f.snapshots++
	f.mu.Unlock()
	return f.rows, f.err
}

func (f *fakeRegistry) LookupByContainerID(id string) (*agent.Entry, error) {
	if f.err != nil {
		return nil, f.err
	}
	for i := range f.rows {
		if f.rows[i].ContainerID == id {
			e := f.rows[i]
			return &e, nil
		}
	}
	return nil, agent.ErrUnknownAgent
}

// scanOnly hides the point lookup, so resolve takes the scan.
type scanOnly struct{ r *fakeRegistry }

func (s scanOnly) Snapshot() ([]agent.Entry, error) { return s.r.Snapshot() }

func entry(t *testing.T, id, project, name string) agent.Entry {
	t.Helper()
	an, err := auth.NewAgentName(name)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := auth.NewProjectSlug(project)
	if err != nil {
		t.Fatal(err)
	}
	return agent.Entry{AgentName: an, Project: ps, ContainerID: id, Thumbprint: sha256.Sum256([]byte(id)),
		RegisteredAt: time.Unix(100, 0), LastSeen: time.Unix(100, 0)}
}

// stateEvent folds a fixed AgentState into the worldview.
type stateEvent struct {
	a  overseer.AgentState
	at time.Time
}

func (e stateEvent) EventName() string     { return "test_state" }
func (e stateEvent) OccurredAt() time.Time { return e.at }
func (e stateEvent) ApplyTo(s *overseer.State) {
	cp := e.a
	*s.Agent(e.a.ContainerID) = cp
}

func newServer(t *testing.T, reg RegistryReader, bus *overseer.Overseer, docker ContainerControl, ex Execer) *Server {
	t.Helper()
	s, err := New(Deps{Registry: reg, Bus: bus, Docker: docker, Exec: ex, Version: "test", Log: logger.Nop(),
		Health: func() (bool, map[string]string) { return true, map[string]string{"registry": "ok"} }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewRequiresDeps(t *testing.T) {
	health := func() (bool, map[string]string) { return true, nil }
	for name, d := range map[string]Deps{
		"no registry": {Bus: overseer.New(nil), Health: health},
		"no bus":      {Registry: &fakeRegistry{}, Health: health},
		"no health":   {Registry: &fakeRegistry{}, Bus: overseer.New(nil)},
	} {
		if _, err := New(d); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestListAgentsJoinsRegistryAndWorldview(t *testing.T) {
	bus := overseer.New(nil)
	reg := &fakeRegistry{rows: []agent.Entry{entry(t, idA, "web", "alpha"), entry(t, idB, "", "beta")}}
	bus.Publish(stateEvent{a: overseer.AgentState{ContainerID: idA, AgentName: "alpha", Project: "web",
		Session: overseer.SessionStatusConnected, Trusted: true, Init: overseer.InitStatusCompleted, InitStepCount: 5}, at: time.Now()})
	// idC is live but unregistered and untrusted.
	bus.Publish(stateEvent{a: overseer.AgentState{ContainerID: idC, AgentName: "mallory", Project: "web",
		Session: overseer.SessionStatusConnected, UntrustedReasons: []overseer.UntrustedReason{overseer.ReasonRegisterFailed}}, at: time.Now()})
	s := newServer(t, reg, bus, nil, nil)

	res, err := s.ListAgents(context.Background(), &adminv1.ListAgentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*adminv1.Agent{}
	for _, a := range res.GetAgents() {
		got[a.GetContainerId()] = a
	}
	if len(got) != 3 {
		t.Fatalf("want 3 agents, got %d: %v", len(got), res.GetAgents())
	}
	a := got[idA]
	if !a.GetRegistered() || a.GetThumbprint() != auth.ThumbprintHex(sha256.Sum256([]byte(idA))) ||
		a.GetSessionState() != "connected" || a.GetInitState() != "completed" || !a.GetLive() || !a.GetTrusted() {
		t.Errorf("alpha: %v", a)
	}
	// A registry row without a live Session vouches for nothing.
	if b := got[idB]; !b.GetRegistered() || b.GetLive() || b.GetSessionState() != "none" || b.GetProject() != "" || b.GetTrusted() {
		t.Errorf("beta (registered, not live): %v", b)
	}
	if c := got[idC]; c.GetRegistered() || c.GetTrusted() || len(c.GetUntrustedReasons()) != 1 || c.GetAgent() != "mallory" {
		t.Errorf("mallory (live, unregistered, untrusted): %v", c)
	}
	// Sorted by (project, agent): beta (global) first.
	if res.GetAgents()[0].GetAgent() != "beta" {
		t.Errorf("order: %v", res.GetAgents())
	}

	res, err = s.ListAgents(context.Background(), &adminv1.ListAgentsRequest{Project: "web"})
	if err != nil || len(res.GetAgents()) != 2 {
		t.Fatalf("project filter: %v %v", err, res.GetAgents())
	}
}

func TestListAgentsRegistryErrorIsUnavailable(t *testing.T) {
	s := newServer(t, &fakeRegistry{err: errors.New("disk on fire")}, overseer.New(nil), nil, nil)
	_, err := s.ListAgents(context.Background(), &adminv1.ListAgentsRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("want Unavailable (never an empty list), got %v", err)
	}
}

func TestHealth(t *testing.T) {
	s := newServer(t, &fakeRegistry{}, overseer.New(nil), nil, nil)
	res, err := s.Health(context.Background(), &adminv1.HealthRequest{})
	if err != nil || !res.GetReady() || res.GetSubsystems()["registry"] != "ok" || res.GetVersion() != "test" {
		t.Fatalf("health: %v %v", res, err)
	}
}

type fakeDocker struct {
	mu    sync.Mutex
	calls []string
	err   error
}

func (f *fakeDocker) record(c string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
	return f.err
}

func (f *fakeDocker) NetworkDisconnect(_ context.Context, network string, o mobyclient.NetworkDisconnectOptions) (mobyclient.NetworkDisconnectResult, error) {
	return mobyclient.NetworkDisconnectResult{}, f.record("disconnect " + network + " " + o.Container)
}

func (f *fakeDocker) ContainerPause(_ context.Context, id string, _ mobyclient.ContainerPauseOptions) (mobyclient.ContainerPauseResult, error) {
	return mobyclient.ContainerPauseResult{}, f.record("pause " + id)
}

func (f *fakeDocker) ContainerKill(_ context.Context, id string, o mobyclient.ContainerKillOptions) (mobyclient.ContainerKillResult, error) {
	return mobyclient.ContainerKillResult{}, f.record("kill " + id + " " + o.Signal)
}

func TestContainEachAction(t *testing.T) {
	for _, tc := range []struct {
		action adminv1.ContainAction
		call   string
		name   string
	}{
		{adminv1.ContainAction_CONTAIN_ACTION_NETWORK_DETACH, "disconnect " + agentnet.NameOf("web", "alpha") + " " + idA, "network-detach"},
		{adminv1.ContainAction_CONTAIN_ACTION_PAUSE, "pause " + idA, "pause"},
		{adminv1.ContainAction_CONTAIN_ACTION_KILL, "kill " + idA + " KILL", "kill"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bus := overseer.New(nil)
			got := make(chan AgentContained, 1)
			unsub := bus.Subscribe("test", nil, func(e overseer.Event) {
				if c, ok := e.(AgentContained); ok {
					got <- c
				}
			})
			defer unsub()
			dk := &fakeDocker{}
			s := newServer(t, &fakeRegistry{rows: []agent.Entry{entry(t, idA, "web", "alpha")}}, bus, dk, nil)
			res, err := s.Contain(context.Background(), &adminv1.ContainRequest{
				Agent: &adminv1.AgentRef{Agent: "alpha", Project: "web"}, Action: tc.action, Reason: "because"})
			if err != nil || res.GetContainerId() != idA {
				t.Fatalf("contain: %v %v", res, err)
			}
			if len(dk.calls) != 1 || dk.calls[0] != tc.call {
				t.Fatalf("docker calls %v, want [%s]", dk.calls, tc.call)
			}
			select {
			case ev := <-got:
				if ev.Action != tc.name || ev.Reason != "because" || ev.ContainerID != idA {
					t.Fatalf("event %+v", ev)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no agent_contained event published")
			}
		})
	}
}

func TestContainRefusals(t *testing.T) {
	idA2 := idA[:63] + "b" // shares a 63-digit prefix with idA
	reg := &fakeRegistry{rows: []agent.Entry{entry(t, idA, "web", "alpha"), entry(t, idA2, "web", "alpha2")}}
	dk := &fakeDocker{}
	s := newServer(t, reg, overseer.New(nil), dk, nil)
	kill := adminv1.ContainAction_CONTAIN_ACTION_KILL
	for _, tc := range []struct {
		name string
		req  *adminv1.ContainRequest
		code codes.Code
	}{
		{"unknown agent", &adminv1.ContainRequest{Agent: &adminv1.AgentRef{Agent: "ghost"}, Action: kill}, codes.NotFound},
		{"wrong project", &adminv1.ContainRequest{Agent: &adminv1.AgentRef{Agent: "alpha", Project: "other"}, Action: kill}, codes.NotFound},
		{"no ref", &adminv1.ContainRequest{Action: kill}, codes.InvalidArgument},
		{"no action", &adminv1.ContainRequest{Agent: &adminv1.AgentRef{Agent: "alpha", Project: "web"}}, codes.InvalidArgument},
		{"ambiguous prefix", &adminv1.ContainRequest{Agent: &adminv1.AgentRef{ContainerId: idA[:12]}, Action: kill}, codes.InvalidArgument},
		{"non-hex container ID", &adminv1.ContainRequest{Agent: &adminv1.AgentRef{ContainerId: "zzzz"}, Action: kill}, codes.InvalidArgument},
		{"too-short container ID", &adminv1.ContainRequest{Agent: &adminv1.AgentRef{ContainerId: "aa"}, Action: kill}, codes.InvalidArgument},
		{"malformed agent name", &adminv1.ContainRequest{Agent: &adminv1.AgentRef{Agent: "Bad Name!"}, Action: kill}, codes.InvalidArgument},
		{"malformed project", &adminv1.ContainRequest{Agent: &adminv1.AgentRef{Agent: "alpha", Project: "../etc"}, Action: kill}, codes.InvalidArgument},
	} {
		if _, err := s.Contain(context.Background(), tc.req); status.Code(err) != tc.code {
			t.Errorf("%s: want %v, got %v", tc.name, tc.code, err)
		}
	}
	if len(dk.calls) != 0 {
		t.Fatalf("refused requests reached Docker: %v", dk.calls)
	}
	dk.err = errors.New("engine says no")
	_, err := s.Contain(context.Background(), &adminv1.ContainRequest{Agent: &adminv1.AgentRef{ContainerId: idA}, Action: kill})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("docker failure: want FailedPrecondition, got %v", err)
	}
	if _, err := newServer(t, reg, overseer.New(nil), nil, nil).Contain(context.Background(),
		&adminv1.ContainRequest{Agent: &adminv1.AgentRef{ContainerId: idA}, Action: kill}); status.Code(err) != codes.Unavailable {
		t.Fatalf("no docker: want Unavailable, got %v", err)
	}
}

// fakeExec streams scripted output then an exit code, recording input.
type fakeExec struct {
	mu    sync.Mutex
	argv  []string
	stdin []byte
	out   [][]byte
	code  int32
	done  chan struct{}

	oddStderr bool        // every second chunk of out is stderr
	resized   [][2]uint32 // Resize calls
}

func (f *fakeExec) Exec(_ context.Context, id string, start *adminv1.ExecStart) (ExecStream, error) {
	f.argv = start.GetArgv()
	return &fakeExecStream{f: f}, nil
}

type fakeExecStream struct {
	f *fakeExec
	i int
}

func (s *fakeExecStream) Recv() ([]byte, bool, int32, error) {
	if s.i < len(s.f.out) {
		s.i++
		// Odd-numbered chunks are stderr when the fake is told so.
		return s.f.out[s.i-1], s.f.oddStderr && s.i%2 == 0, 0, nil
	}
	<-s.f.done // wait for stdin to close, like `cat`
	return nil, false, s.f.code, io.EOF
}

func (s *fakeExecStream) Resize(rows, cols uint32) error {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	s.f.resized = append(s.f.resized, [2]uint32{rows, cols})
	return nil
}

func (s *fakeExecStream) Stdin(d []byte) error {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	s.f.stdin = append(s.f.stdin, d...)
	return nil
}
func (s *fakeExecStream) CloseStdin() error  { close(s.f.done); return nil }
func (s *fakeExecStream) Signal(int32) error { return nil }
func (s *fakeExecStream) Close() error       { return nil }

// A worldview row that says Trusted but has no live Session (e.g. a missed
// event) must not be reported trusted.
func TestListAgentsTrustNeedsLiveSession(t *testing.T) {
	bus := overseer.New(nil)
	reg := &fakeRegistry{rows: []agent.Entry{entry(t, idA, "web", "alpha")}}
	bus.Publish(stateEvent{a: overseer.AgentState{ContainerID: idA, AgentName: "alpha", Project: "web",
		Session: overseer.SessionStatusClosed, Trusted: true}, at: time.Now()})
	s := newServer(t, reg, bus, nil, nil)
	res, err := s.ListAgents(context.Background(), &adminv1.ListAgentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.GetAgents()) != 1 || res.GetAgents()[0].GetTrusted() {
		t.Fatalf("closed Session reported trusted: %v", res.GetAgents())
	}
}
