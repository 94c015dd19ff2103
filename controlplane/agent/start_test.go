package agent

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/internal/consts"
)

type fakeLister struct {
	mu      sync.Mutex
	all     []string
	running []string
	err     error
}

func (f *fakeLister) ListAgentContainerIDs(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.all...), f.err
}

func (f *fakeLister) ListRunningAgentContainerIDs(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.running...), f.err
}

// fakePeerLookup can also Observe, as the real index can: a test proves
// Start never feeds it (the index follows the bus by its own subscription).
type fakePeerLookup struct {
	mu       sync.Mutex
	observed []string
}

func (f *fakePeerLookup) LookupByIP(context.Context, netip.Addr) (ResolvedContainer, error) {
	return ResolvedContainer{}, ErrNoContainerForPeerIP
}

func (f *fakePeerLookup) Observe(_ context.Context, id, action string) {
	f.mu.Lock()
	f.observed = append(f.observed, action+"/"+id)
	f.mu.Unlock()
}

// panicRegistry panics when asked to evict panicOn, to drive a Start
// subscriber into its panic recovery; evicted records that it did.
type panicRegistry struct {
	Registry
	panicOn string
	hit     atomic.Bool
}

func (p *panicRegistry) EvictByContainerID(id string) error {
	if id == p.panicOn {
		p.hit.Store(true)
		panic("registry exploded")
	}
	return p.Registry.EvictByContainerID(id)
}

func agentEvent(action, id string, extra ...string) dockerevents.DockerEvent {
	labels := map[string]string{consts.LabelPurpose: consts.PurposeAgent, consts.LabelAgent: "dev"}
	for i := 0; i+1 < len(extra); i += 2 {
		labels[extra[i]] = extra[i+1]
	}
	return dockerevents.DockerEvent{Action: action, ContainerID: id, Labels: labels}
}

func startDeps(env *dtEnv, lister *fakeLister, peers *fakePeerLookup) StartDeps {
	return StartDeps{Registry: env.reg, DockerLister: lister, Running: lister, PeerLookup: peers,
		Dialer: env.dialer, Bus: env.bus}
}

func TestStartReapsOrphansOnly(t *testing.T) {
	env := newDTEnv(t, nil)
	live, orphan := dtContainerID(t), dtContainerID(t)
	addRow(t, env.reg, live, env.pki.agentLeaf(t, "proj", "dev", live))
	addRow(t, env.reg, orphan, env.pki.agentLeaf(t, "proj", "dev", orphan))
	cleanup, err := Start(context.Background(), startDeps(env, &fakeLister{all: []string{live}}, &fakePeerLookup{}))
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	if _, err := env.reg.LookupByContainerID(orphan); !errors.Is(err, ErrUnknownAgent) {
		t.Fatalf("orphan row kept: %v", err)
	}
	if _, err := env.reg.LookupByContainerID(live); err != nil {
		t.Fatalf("live row evicted: %v", err)
	}
}

func TestStartListErrorNeverEvicts(t *testing.T) {
	env := newDTEnv(t, nil)
	id := dtContainerID(t)
	addRow(t, env.reg, id, env.pki.agentLeaf(t, "proj", "dev", id))
	cleanup, err := Start(context.Background(), startDeps(env, &fakeLister{err: errors.New("daemon unreachable")}, &fakePeerLookup{}))
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	rd := env.rec.wait(t, "", EventReapDegraded).(ReapDegraded)
	if rd.Reason == "" {
		t.Fatal("ReapDegraded without a reason")
	}
	if _, err := env.reg.LookupByContainerID(id); err != nil {
		t.Fatalf("row evicted on a list error: %v", err)
	}
}

func TestStartValidatesDeps(t *testing.T) {
	env := newDTEnv(t, nil)
	full := startDeps(env, &fakeLister{}, &fakePeerLookup{})
	for name, mut := range map[string]func(*StartDeps){
		"registry": func(d *StartDeps) { d.Registry = nil },
		"lister":   func(d *StartDeps) { d.DockerLister = nil },
		"peers":    func(d *StartDeps) { d.PeerLookup = nil },
		"dialer":   func(d *StartDeps) { d.Dialer = nil },
		"bus":      func(d *StartDeps) { d.Bus = nil },
	} {
		d := full
		mut(&d)
		if _, err := Start(context.Background(), d); err == nil {
			t.Errorf("nil %s accepted", name)
		}
	}
}

func countEvents(env *dtEnv, id, name string) int {
	n := 0
	for _, e := range env.rec.names(id) {
		if e == name {
			n++
		}
	}
	return n
}

func TestStartDialsAndFollowsDockerEvents(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{initialized: true, cmdRunning: true}
	a, _ := env.agent(t, f)
	addRow(t, env.reg, a, f.leaf)
	lister := &fakeLister{all: []string{a}, running: []string{a}}
	deps := startDeps(env, lister, &fakePeerLookup{})
	reg := &panicRegistry{Registry: env.reg, panicOn: dtContainerID(t)}
	deps.Registry = reg
	cleanup, err := Start(context.Background(), deps)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()

	// Boot dial.
	env.rec.wait(t, a, EventInitCompleted)

	// A non-stopping kill is ignored; die cancels without SessionBroken.
	env.bus.Publish(agentEvent(dockerevents.ActionKill, a, "signal", "15"))
	env.bus.Publish(agentEvent(dockerevents.ActionDie, a))
	env.rec.wait(t, a, EventSessionClosed)
	if env.rec.has(a, EventSessionBroken) {
		t.Fatalf("stop produced SessionBroken: %v", env.rec.names(a))
	}
	if countEvents(env, a, EventSessionClosed) != 1 {
		t.Fatal("kill -15 must not cancel the session")
	}

	// start → dial again (Match: no re-register).
	env.bus.Publish(agentEvent(dockerevents.ActionStart, a))
	dtWait(t, "second connect", func() bool { return countEvents(env, a, EventSessionConnected) == 2 })
	if f.saw("register") {
		t.Fatal("Match reconnect registered")
	}

	// A subscriber panic (evicting on destroy) is recovered; later events flow.
	env.bus.Publish(agentEvent(dockerevents.ActionDestroy, reg.panicOn))
	// Non-agent start is not dialed; an agent start after it is.
	other := dtContainerID(t)
	env.bus.Publish(dockerevents.DockerEvent{Action: dockerevents.ActionStart, ContainerID: other, Labels: map[string]string{}})
	g := &fakeClawkerd{initialized: true, cmdRunning: true}
	b, _ := env.agent(t, g)
	addRow(t, env.reg, b, g.leaf)
	env.bus.Publish(agentEvent(dockerevents.ActionStart, b))
	env.rec.wait(t, b, EventInitCompleted)
	if env.targets.calls(other) != 0 {
		t.Fatal("non-agent container dialed")
	}

	// SIGKILL cancels; destroy evicts the row.
	env.bus.Publish(agentEvent(dockerevents.ActionKill, b, "signal", "9"))
	env.rec.wait(t, b, EventSessionClosed)
	env.bus.Publish(agentEvent(dockerevents.ActionDestroy, a))
	dtWait(t, "row evicted on destroy", func() bool {
		_, err := env.reg.LookupByContainerID(a)
		return errors.Is(err, ErrUnknownAgent)
	})
	dtWait(t, "session for destroyed container gone", func() bool {
		for _, s := range env.dialer.Sessions() {
			if s.ContainerID == a {
				return false
			}
		}
		return true
	})
	// destroy dropped the worldview row before CancelDial published the
	// Session's SessionClosed; that must not have resurrected it.
	if st, ok := env.bus.Agent(a); ok {
		t.Fatalf("destroyed agent left a ghost row: %+v", st)
	}
	if !reg.hit.Load() {
		t.Fatal("panic path not exercised")
	}
}

func TestStartCleanupUnwinds(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{initialized: true, cmdRunning: true}
	a, _ := env.agent(t, f)
	addRow(t, env.reg, a, f.leaf)
	cleanup, err := Start(context.Background(), startDeps(env, &fakeLister{all: []string{a}, running: []string{a}}, &fakePeerLookup{}))
	if err != nil {
		t.Fatal(err)
	}
	env.rec.wait(t, a, EventInitCompleted)
	cleanup()
	if subs := env.bus.Stats().Subscribers; len(subs) != 1 || subs[0] != "test-recorder" {
		t.Fatalf("subscriptions left: %v", subs)
	}
	if n := len(env.dialer.Sessions()); n != 0 {
		t.Fatalf("%d sessions left after cleanup", n)
	}
	if env.rec.has(a, EventSessionBroken) {
		t.Fatal("shutdown must not be SessionBroken")
	}
	// Events after cleanup do nothing.
	env.bus.Publish(agentEvent(dockerevents.ActionStart, a))
	env.bus.Publish(agentEvent(dockerevents.ActionDestroy, a))
	if _, err := env.reg.LookupByContainerID(a); err != nil {
		t.Fatal("destroy handled after cleanup")
	}
}

// hookLister runs onList while "listing", to interleave a registration
// with the list the way a live agent listener can.
type hookLister struct {
	fakeLister
	onList func()
}

func (h *hookLister) ListAgentContainerIDs(ctx context.Context) ([]string, error) {
	ids, err := h.fakeLister.ListAgentContainerIDs(ctx)
	if h.onList != nil {
		h.onList()
	}
	return ids, err
}

// A container that registers after the reap's container list started is
// absent from that list; its fresh row must survive (the registry snapshot
// precedes the list).
func TestStartReapKeepsRowRegisteredDuringList(t *testing.T) {
	env := newDTEnv(t, nil)
	fresh := dtContainerID(t)
	lister := &hookLister{onList: func() {
		addRow(t, env.reg, fresh, env.pki.agentLeaf(t, "proj", "dev", fresh))
	}}
	cleanup, err := Start(context.Background(), StartDeps{Registry: env.reg, DockerLister: lister,
		PeerLookup: &fakePeerLookup{}, Dialer: env.dialer, Bus: env.bus, ReconcileInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	if _, err := env.reg.LookupByContainerID(fresh); err != nil {
		t.Fatalf("row registered during the reap list was evicted: %v", err)
	}
}

// The periodic reconcile heals what events missed: a running agent whose
// start event was dropped gets dialed, and a row whose container vanished
// without a destroy event is evicted.
func TestStartPeriodicReconcileHealsMissedEvents(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{initialized: true, cmdRunning: true}
	a, _ := env.agent(t, f)
	addRow(t, env.reg, a, f.leaf)
	var lists atomic.Int64
	lister := &hookLister{fakeLister: fakeLister{all: []string{a}}, // a exists, not running yet
		onList: func() { lists.Add(1) }}
	cleanup, err := Start(context.Background(), StartDeps{Registry: env.reg, DockerLister: lister, Running: lister,
		PeerLookup: &fakePeerLookup{}, Dialer: env.dialer, Bus: env.bus, ReconcileInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	if env.rec.has(a, EventSessionConnecting) {
		t.Fatal("stopped agent dialed at boot")
	}

	// a starts; its start event never reaches the subscriber.
	orphan := dtContainerID(t)
	addRow(t, env.reg, orphan, env.pki.agentLeaf(t, "proj", "dev", orphan))
	lister.mu.Lock()
	lister.running = []string{a}
	lister.mu.Unlock()
	env.rec.wait(t, a, EventInitCompleted)
	dtWait(t, "orphan row evicted by the periodic pass", func() bool {
		_, err := env.reg.LookupByContainerID(orphan)
		return errors.Is(err, ErrUnknownAgent)
	})
	// Later passes dedup against the live Session.
	seen := lists.Load()
	dtWait(t, "three more passes", func() bool { return lists.Load() >= seen+3 })
	if n := countEvents(env, a, EventSessionConnecting); n != 1 {
		t.Fatalf("live Session re-dialed %d times", n)
	}
	// cleanup waits for the reconciler: no pass runs after it returns.
	cleanup()
	stopped := lists.Load()
	if n := len(env.dialer.Sessions()); n != 0 {
		t.Fatalf("%d sessions after cleanup", n)
	}
	dtWait(t, "test recorder idle", func() bool { return env.rec.has(a, EventSessionClosed) })
	if lists.Load() != stopped {
		t.Fatal("reconcile pass ran after cleanup")
	}
}
