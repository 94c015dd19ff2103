package agent

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/logger"
)

var fullPlan = []string{
	EventSessionConnecting, EventSessionConnected, EventAgentRegistered, EventInitStarted,
	EventInitStepStarted, EventInitStepCompleted, // config
	EventInitStepStarted, EventInitStepCompleted, // git
	EventInitStepStarted, EventInitStepCompleted, // ssh
	EventInitStepStarted, EventInitStepCompleted, // post-init
	EventInitStepStarted, EventInitStepCompleted, // pre-run
	EventInitStepStarted, EventInitStepCompleted, // agent-ready
	EventInitCompleted,
}

func TestDialMissRegistersInitsAndServesExec(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{registerOK: true}
	id, _ := env.agent(t, f)
	f.onRegister = func() { addRow(t, env.reg, id, f.leaf) }

	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	if got := env.rec.names(id); !reflect.DeepEqual(got, fullPlan) {
		t.Fatalf("events:\n got %v\nwant %v", got, fullPlan)
	}
	ev := env.rec.events(id)
	if c := ev[1].(SessionConnected); c.Registered || c.PeerAgentFullName != "clawker.proj.dev" ||
		c.PeerThumbprint != auth.Thumbprint(f.leaf.Cert) || c.Attempts < 1 {
		t.Fatalf("SessionConnected = %+v", c)
	}
	if r := ev[2].(AgentRegistered); !r.Ok {
		t.Fatalf("AgentRegistered = %+v", r)
	}
	var steps []string
	for _, e := range ev {
		if s, ok := e.(InitStepStarted); ok {
			steps = append(steps, fmt.Sprintf("%d/%d:%s", s.StepIndex, s.StepCount, s.StepName))
		}
	}
	want := []string{"1/6:config", "2/6:git", "3/6:ssh", "4/6:post-init", "5/6:pre-run", "6/6:agent-ready"}
	if !reflect.DeepEqual(steps, want) {
		t.Fatalf("steps = %v", steps)
	}
	if got := f.seen(); !reflect.DeepEqual(got, []string{"hello", "register", "probe-user", "config", "git", "ssh",
		"post-init", "agent-initialized", "pre-run", "agent-ready-cmd"}) {
		t.Fatalf("clawkerd saw %v", got)
	}
	// Every step runs as the probed user (no root write into the home);
	// hooks end the container on failure, built-in steps never do.
	for _, step := range []string{StepConfig, StepGit, StepSSH, StepPostInit, StepPreRun} {
		sh := f.shell(step)
		hook := step == StepPostInit || step == StepPreRun
		st := sh.GetStages()[0]
		if sh.GetExitOnNonZero() != hook || st.GetUid() != 1000 || st.GetGid() != 1000 || sh.GetTimeoutSeconds() == 0 || st.GetArgv()[0] != "/bin/sh" ||
			!strings.Contains(st.GetArgv()[2], "UHOME='/home/dev'") {
			t.Fatalf("step %s sent as %+v", step, sh)
		}
	}
	a, ok := env.bus.Agent(id)
	if !ok || !a.Registered || !a.Trusted || a.Session != overseer.SessionStatusConnected || a.Init != overseer.InitStatusCompleted {
		t.Fatalf("worldview = %+v", a)
	}

	// The Session stays up for admin Exec after the plan.
	dtWait(t, "session ready", func() bool {
		s := env.dialer.Sessions()
		return len(s) == 1 && s[0].Ready
	})
	h, err := env.dialer.Exec(context.Background(), id, &clawkerdv1.ShellCommand{
		Stages: []*clawkerdv1.PipeStage{{Argv: []string{"echo", "hi"}}}})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var final *clawkerdv1.Done
	for r := range h.Responses() {
		out.Write(r.GetOutput().GetData())
		if d := r.GetDone(); d != nil {
			final = d
		}
	}
	if out.String() != "echo hi" || final == nil || final.GetFinalExitCode() != 0 {
		t.Fatalf("exec output %q done %v", out.String(), final)
	}

	env.dialer.CancelDial(id)
	if len(env.dialer.Sessions()) != 0 {
		t.Fatal("CancelDial left the session registered")
	}
	if env.rec.has(id, EventSessionBroken) || !env.rec.has(id, EventSessionClosed) {
		t.Fatalf("intentional teardown must be SessionClosed, not Broken: %v", env.rec.names(id))
	}
	if _, err := env.dialer.Exec(context.Background(), id, &clawkerdv1.ShellCommand{
		Stages: []*clawkerdv1.PipeStage{{Argv: []string{"true"}}}}); !errors.Is(err, ErrNoSession) {
		t.Fatalf("Exec without session: %v", err)
	}
	dtWait(t, "server sees stream end", func() bool { return f.live.Load() == 0 })
}

func TestDialMatchSkipsRegisterAndInit(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{initialized: true, cmdRunning: true}
	id, _ := env.agent(t, f)
	addRow(t, env.reg, id, f.leaf)

	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	want := []string{EventSessionConnecting, EventSessionConnected, EventInitStarted, EventInitCompleted}
	if got := env.rec.names(id); !reflect.DeepEqual(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if c := env.rec.events(id)[1].(SessionConnected); !c.Registered {
		t.Fatal("Match must mark the session registered")
	}
	if s := env.rec.events(id)[2].(InitStarted); s.StepCount != 0 {
		t.Fatalf("plan for initialized+running = %d steps, want 0 (a reconnect, not a start)", s.StepCount)
	}
	if f.saw("register") || f.saw("config") || f.saw("agent-ready-cmd") || f.saw("pre-run") {
		t.Fatalf("clawkerd saw %v", f.seen())
	}
	if a, _ := env.bus.Agent(id); !a.Registered || !a.Trusted {
		t.Fatalf("worldview = %+v", a)
	}
}

func TestDialInitializedRunsBootStepsAndAgentReady(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{initialized: true}
	id, _ := env.agent(t, f)
	addRow(t, env.reg, id, f.leaf)
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	if got := f.seen(); !reflect.DeepEqual(got, []string{"hello", "probe-user", "pre-run", "agent-ready-cmd"}) {
		t.Fatalf("clawkerd saw %v", got)
	}
}

func untrustedReasons(env *dtEnv, id string) []overseer.UntrustedReason {
	var out []overseer.UntrustedReason
	for _, e := range env.rec.events(id) {
		if u, ok := e.(AgentUntrusted); ok {
			out = append(out, u.Reason)
		}
	}
	return out
}

func TestDialThumbprintMismatch(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{initialized: true, cmdRunning: true}
	id, _ := env.agent(t, f)
	addRow(t, env.reg, id, env.pki.agentLeaf(t, "proj", "dev", id)) // another cert for the same container

	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	names := env.rec.names(id)
	if names[2] != EventAgentUntrusted {
		t.Fatalf("AgentUntrusted must follow SessionConnected: %v", names)
	}
	if got := untrustedReasons(env, id); !reflect.DeepEqual(got, []overseer.UntrustedReason{overseer.ReasonThumbprintMismatch}) {
		t.Fatalf("reasons %v", got)
	}
	if f.saw("register") || env.rec.has(id, EventAgentRegistered) {
		t.Fatal("mismatch must not register")
	}
	if a, _ := env.bus.Agent(id); a.Trusted || a.Registered || a.Session != overseer.SessionStatusConnected {
		t.Fatalf("worldview = %+v (session must stay up)", a)
	}
}

type failingRegistry struct{ Registry }

func (failingRegistry) LookupByContainerID(string) (*Entry, error) {
	return nil, errors.New("database is locked")
}

func TestDialRegistryError(t *testing.T) {
	env := newDTEnv(t, failingRegistry{NewRegistry(logger.Nop())})
	f := &fakeClawkerd{initialized: true, cmdRunning: true}
	id, _ := env.agent(t, f)
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	if got := untrustedReasons(env, id); !reflect.DeepEqual(got, []overseer.UntrustedReason{overseer.ReasonRegistryError}) {
		t.Fatalf("reasons %v", got)
	}
	if f.saw("register") {
		t.Fatal("registry error must not trigger Register")
	}
}

func TestDialRegisterFailed(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{registerOK: false}
	id, _ := env.agent(t, f)
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	names := env.rec.names(id)
	if names[2] != EventAgentRegistered || names[3] != EventAgentUntrusted {
		t.Fatalf("want AgentRegistered then AgentUntrusted after SessionConnected: %v", names)
	}
	r := env.rec.events(id)[2].(AgentRegistered)
	u := env.rec.events(id)[3].(AgentUntrusted)
	if r.Ok || r.Reason != "token exchange refused" || u.Reason != overseer.ReasonRegisterFailed {
		t.Fatalf("registered %+v untrusted %+v", r, u)
	}
}

// clawkerd claims ok without a registry row: what every running agent
// does after the CP lost its registry (clawkerd believes it is already
// registered). Not registered, not trusted, and reported with the distinct
// registry_row_lost reason the containment policy does not act on.
func TestDialRegisterOkWithoutRowIsFailure(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{registerOK: true} // claims ok, writes no row
	id, _ := env.agent(t, f)
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	if r := env.rec.events(id)[2].(AgentRegistered); r.Ok {
		t.Fatal("RegisterDone{ok} without a matching registry row must not count as registered")
	}
	if got := untrustedReasons(env, id); !reflect.DeepEqual(got, []overseer.UntrustedReason{overseer.ReasonRegistryRowLost}) {
		t.Fatalf("reasons %v", got)
	}
	if a, _ := env.bus.Agent(id); a.Trusted || a.Registered {
		t.Fatalf("worldview = %+v", a)
	}
}

func TestDialUntrustedCertStillConnects(t *testing.T) {
	env := newDTEnv(t, nil)
	id := dtContainerID(t)
	// A cert from a foreign CA, with the wrong CN and no agent SANs.
	foreign, err := auth.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := foreign.Mint(auth.LeafSpec{CommonName: "impostor"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f := startFake(t, env.pki, &fakeClawkerd{initialized: true, cmdRunning: true}, leaf)
	env.targets.set(id, DialTarget{Address: f.addr, AgentName: "dev", Project: "proj"})
	env.dialer.DialAgent(context.Background(), id)
	dtWait(t, "four findings", func() bool { return len(untrustedReasons(env, id)) == 4 })
	got := untrustedReasons(env, id)
	want := []overseer.UntrustedReason{overseer.ReasonChainInvalid, overseer.ReasonCNMismatch,
		overseer.ReasonIdentityMismatch, overseer.ReasonContainerMismatch}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("reasons %v, want %v", got, want)
	}
	// It failed the pin: the Session stays up for observation (and
	// containment), but nothing is sent on it, not even RegisterRequired.
	dtWait(t, "observation session", func() bool { return observing(env, id) })
	if a, _ := env.bus.Agent(id); a.Session != overseer.SessionStatusConnected || a.Trusted {
		t.Fatalf("worldview = %+v", a)
	}
	if got := f.seen(); !reflect.DeepEqual(got, []string{"hello"}) {
		t.Fatalf("an unpinned peer was sent %v", got)
	}
}

// TestDialerLeavesNoGoroutines: a full dial → init → exec → teardown
// cycle leaves nothing running (conns closed, pumps ended). The goleak
// check is registered first so it runs after every other cleanup.
func TestDialerLeavesNoGoroutines(t *testing.T) {
	baseline := goleak.IgnoreCurrent() // captured now, before the test starts anything
	t.Cleanup(func() { goleak.VerifyNone(t, baseline) })
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{registerOK: true}
	id, _ := env.agent(t, f)
	f.onRegister = func() { addRow(t, env.reg, id, f.leaf) }
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	dtWait(t, "session ready", func() bool {
		s := env.dialer.Sessions()
		return len(s) == 1 && s[0].Ready
	})
	h, err := env.dialer.Exec(context.Background(), id, &clawkerdv1.ShellCommand{
		Stages: []*clawkerdv1.PipeStage{{Argv: []string{"true"}}}})
	if err != nil {
		t.Fatal(err)
	}
	for range h.Responses() {
	}
	// A failing dial cycle too.
	gone := dtContainerID(t)
	env.targets.fail(gone, ErrContainerGone)
	env.dialer.DialAgent(context.Background(), gone)
	env.rec.wait(t, gone, EventSessionFailed)
}
