package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
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
	// Hooks run as the probed user and end the container on failure;
	// built-in steps run as root and never do.
	for _, step := range []string{StepConfig, StepGit, StepSSH, StepPostInit, StepPreRun} {
		sh := f.shell(step)
		hook := step == StepPostInit || step == StepPreRun
		st := sh.GetStages()[0]
		if sh.GetExitOnNonZero() != hook || (hook && (st.GetUid() != 1000 || st.GetGid() != 1000)) ||
			(!hook && st.GetUid() != 0) || sh.GetTimeoutSeconds() == 0 || st.GetArgv()[0] != "/bin/sh" ||
			!strings.Contains(st.GetArgv()[2], "UHOME='/home/dev'") {
			t.Fatalf("step %s sent as %+v", step, sh)
		}
	}
	a, ok := env.bus.Agent(id)
	if !ok || !a.Registered || !a.Trusted || a.Session != overseer.SessionConnected || a.Init != overseer.InitCompleted {
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
	if a, _ := env.bus.Agent(id); a.Trusted || a.Registered || a.Session != overseer.SessionConnected {
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
	env.rec.wait(t, id, EventInitCompleted)
	got := untrustedReasons(env, id)
	want := []overseer.UntrustedReason{overseer.ReasonChainInvalid, overseer.ReasonCNMismatch,
		overseer.ReasonIdentityMismatch, overseer.ReasonIdentityMismatch, overseer.ReasonRegisterFailed}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("reasons %v, want %v", got, want)
	}
	// Miss → Register was still attempted (policy acts on the events, not the dialer).
	if !f.saw("register") {
		t.Fatal("miss must send RegisterRequired")
	}
}

func TestDialDedup50Concurrent(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{initialized: true, cmdRunning: true}
	id, _ := env.agent(t, f)
	addRow(t, env.reg, id, f.leaf)
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env.dialer.DialAgent(context.Background(), id)
		}()
	}
	wg.Wait()
	env.rec.wait(t, id, EventInitCompleted)
	// Later calls while the Session is live are no-ops too.
	for i := 0; i < 10; i++ {
		env.dialer.DialAgent(context.Background(), id)
	}
	if n := f.sessions.Load(); n != 1 {
		t.Fatalf("%d sessions opened, want 1", n)
	}
	count := 0
	for _, n := range env.rec.names(id) {
		if n == EventSessionConnecting {
			count++
		}
	}
	if count != 1 || len(env.dialer.Sessions()) != 1 {
		t.Fatalf("SessionConnecting x%d, sessions %v", count, env.dialer.Sessions())
	}
}

func TestCancelDialDuringRetry(t *testing.T) {
	env := newDTEnv(t, nil, WithRetry(time.Millisecond, 2*time.Millisecond, time.Hour))
	id := dtContainerID(t)
	env.targets.set(id, DialTarget{Address: "127.0.0.1:1", AgentName: "dev"}) // nothing listens
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventSessionConnecting)
	env.dialer.CancelDial(id) // synchronous
	if len(env.dialer.Sessions()) != 0 {
		t.Fatal("dial entry survived CancelDial")
	}
	if env.rec.has(id, EventSessionFailed) || env.rec.has(id, EventSessionBroken) {
		t.Fatalf("cancel must not report failure: %v", env.rec.names(id))
	}
	env.rec.wait(t, id, EventSessionClosed)
	env.dialer.CancelDial(id) // no-op
	// A fresh DialAgent after cancel dials again.
	env.dialer.DialAgent(context.Background(), id)
	dtWait(t, "redial", func() bool { return len(env.dialer.Sessions()) == 1 })
}

func TestDialTotalTimeout(t *testing.T) {
	env := newDTEnv(t, nil, WithRetry(time.Millisecond, 4*time.Millisecond, 150*time.Millisecond))
	id := dtContainerID(t)
	env.targets.set(id, DialTarget{Address: "127.0.0.1:1", AgentName: "dev"})
	env.dialer.DialAgent(context.Background(), id)
	f := env.rec.wait(t, id, EventSessionFailed).(SessionFailed)
	if f.Reason != FailConnectTimeout || f.Attempts < 2 {
		t.Fatalf("SessionFailed = %+v", f)
	}
	dtWait(t, "entry removed", func() bool { return len(env.dialer.Sessions()) == 0 })
}

func TestDialContainerGoneStopsRetrying(t *testing.T) {
	env := newDTEnv(t, nil)
	id := dtContainerID(t)
	env.targets.fail(id, fmt.Errorf("inspect: %w", ErrContainerGone))
	env.dialer.DialAgent(context.Background(), id)
	f := env.rec.wait(t, id, EventSessionFailed).(SessionFailed)
	if f.Reason != FailContainerGone || f.Attempts != 1 {
		t.Fatalf("SessionFailed = %+v", f)
	}
	if env.rec.has(id, EventSessionConnecting) {
		t.Fatal("no SessionConnecting before a successful inspect")
	}
	id2 := dtContainerID(t)
	env.targets.fail(id2, ErrContainerNotRunning)
	env.dialer.DialAgent(context.Background(), id2)
	if f := env.rec.wait(t, id2, EventSessionFailed).(SessionFailed); f.Reason != FailContainerNotRunning {
		t.Fatalf("SessionFailed = %+v", f)
	}
}

func TestDialFDLeakCeiling(t *testing.T) {
	env := newDTEnv(t, nil, WithRetry(time.Millisecond, 2*time.Millisecond, time.Hour))
	var closes int
	var mu sync.Mutex
	env.dialer.closeConn = func(c *grpc.ClientConn) error {
		_ = c.Close() // really close, report failure anyway
		mu.Lock()
		closes++
		mu.Unlock()
		return errors.New("close: bad file descriptor")
	}
	id := dtContainerID(t)
	env.targets.set(id, DialTarget{Address: "127.0.0.1:1", AgentName: "dev"})
	env.dialer.DialAgent(context.Background(), id)
	f := env.rec.wait(t, id, EventSessionFailed).(SessionFailed)
	if f.Reason != FailFDLeakCeiling || f.Attempts != closeErrCeiling {
		t.Fatalf("SessionFailed = %+v", f)
	}
	mu.Lock()
	defer mu.Unlock()
	if closes != closeErrCeiling {
		t.Fatalf("%d closes, want %d", closes, closeErrCeiling)
	}
}

func TestDialConnectsOnceListenerComesUp(t *testing.T) {
	env := newDTEnv(t, nil)
	id := dtContainerID(t)
	f := &fakeClawkerd{initialized: true, cmdRunning: true}
	leaf := env.pki.agentLeaf(t, "proj", "dev", id)
	addRow(t, env.reg, id, leaf)
	// Resolve fails (no IP yet) until the listener is up.
	env.targets.fail(id, errors.New("no clawker-net address yet"))
	env.dialer.DialAgent(context.Background(), id)
	dtWait(t, "a few failed attempts", func() bool { return env.targets.calls(id) >= 3 })
	startFake(t, env.pki, f, leaf)
	env.targets.mu.Lock()
	delete(env.targets.e, id)
	env.targets.m[id] = DialTarget{Address: f.addr, AgentName: "dev", Project: "proj"}
	env.targets.mu.Unlock()
	c := env.rec.wait(t, id, EventSessionConnected).(SessionConnected)
	if c.Attempts < 2 {
		t.Fatalf("attempts = %d, want retries before the listener came up", c.Attempts)
	}
}

func TestPeerCloseIsSessionBroken(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{initialized: true, closeAfterInit: true}
	id, _ := env.agent(t, f)
	addRow(t, env.reg, id, f.leaf)
	env.dialer.DialAgent(context.Background(), id)
	b := env.rec.wait(t, id, EventSessionBroken).(SessionBroken)
	if b.Reason == "" || env.rec.has(id, EventSessionClosed) {
		t.Fatalf("broken = %+v events %v", b, env.rec.names(id))
	}
	dtWait(t, "entry removed", func() bool { return len(env.dialer.Sessions()) == 0 })
	if a, _ := env.bus.Agent(id); a.Session != overseer.SessionBroken {
		t.Fatalf("worldview session = %s", a.Session)
	}
}

func TestDialerBackoffBounds(t *testing.T) {
	if connectMaxBackoff > 100*time.Millisecond || connectBaseBackoff > 10*time.Millisecond {
		t.Fatalf("backoff constants too coarse for tens-of-ms connect: base %v cap %v", connectBaseBackoff, connectMaxBackoff)
	}
	for attempt := 1; attempt <= 30; attempt++ {
		limit := connectBaseBackoff << (attempt - 1)
		if attempt > 10 || limit > connectMaxBackoff {
			limit = connectMaxBackoff
		}
		var maxSeen time.Duration
		for i := 0; i < 200; i++ {
			d := backoff(connectBaseBackoff, connectMaxBackoff, attempt)
			if d < 0 || d > limit {
				t.Fatalf("attempt %d: %v outside [0, %v]", attempt, d, limit)
			}
			if d > maxSeen {
				maxSeen = d
			}
		}
		if maxSeen == 0 {
			t.Fatalf("attempt %d: no jitter spread", attempt)
		}
	}
}

func TestNewValidates(t *testing.T) {
	p := newDTPKI(t)
	bus := overseer.New(nil)
	reg := NewRegistry(nil)
	if _, err := New(nil, nil, nil, reg, p.certPath, p.keyPath, p.pool, nil); err == nil {
		t.Fatal("nil bus accepted")
	}
	if _, err := New(nil, nil, bus, nil, p.certPath, p.keyPath, p.pool, nil); err == nil {
		t.Fatal("nil registry accepted")
	}
	if _, err := New(nil, nil, bus, reg, "/nonexistent", p.keyPath, p.pool, nil); err == nil {
		t.Fatal("missing cert accepted")
	}
	if _, err := New(nil, nil, bus, reg, p.certPath, p.keyPath, p.pool, nil); err == nil {
		t.Fatal("nil docker without resolver accepted")
	}
	if _, err := NewExecutor(nil, nil); err == nil {
		t.Fatal("executor with nil bus accepted")
	}
}

type fakeInspector struct {
	res mobyclient.ContainerInspectResult
	err error
}

func (f fakeInspector) ContainerInspect(context.Context, string, mobyclient.ContainerInspectOptions) (mobyclient.ContainerInspectResult, error) {
	return f.res, f.err
}

func inspectResult(running bool, ip string) mobyclient.ContainerInspectResult {
	c := container.InspectResponse{
		State:           &container.State{Running: running},
		Config:          &container.Config{Labels: map[string]string{consts.LabelAgent: "dev", consts.LabelProject: "proj"}},
		NetworkSettings: &container.NetworkSettings{Networks: map[string]*network.EndpointSettings{}},
	}
	if ip != "" {
		c.NetworkSettings.Networks[consts.NetworkName] = &network.EndpointSettings{IPAddress: netip.MustParseAddr(ip)}
	}
	return mobyclient.ContainerInspectResult{Container: c}
}

func TestInspectTargetResolution(t *testing.T) {
	p := newDTPKI(t)
	mk := func(f fakeInspector) *Dialer {
		d, err := New(nil, f, overseer.New(nil), NewRegistry(nil), p.certPath, p.keyPath, p.pool, nil)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	tgt, err := mk(fakeInspector{res: inspectResult(true, "172.30.0.5")}).resolve(context.Background(), "c")
	if err != nil || tgt.Address != "172.30.0.5:7700" || tgt.AgentName != "dev" || tgt.Project != "proj" {
		t.Fatalf("target %+v err %v", tgt, err)
	}
	if _, err := mk(fakeInspector{res: inspectResult(false, "172.30.0.5")}).resolve(context.Background(), "c"); !errors.Is(err, ErrContainerNotRunning) {
		t.Fatalf("stopped: %v", err)
	}
	_, err = mk(fakeInspector{res: inspectResult(true, "")}).resolve(context.Background(), "c")
	if err == nil || errors.Is(err, ErrContainerGone) || errors.Is(err, ErrContainerNotRunning) {
		t.Fatalf("not-yet-attached must be a retryable error: %v", err)
	}
	_, err = mk(fakeInspector{err: cerrdefs.ErrNotFound}).resolve(context.Background(), "c")
	if !errors.Is(err, ErrContainerGone) {
		t.Fatalf("not found: %v", err)
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
