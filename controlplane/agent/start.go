package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/logger"
)

// DefaultReconcileInterval is how often Start re-derives the agent
// subsystem from Docker: dial every running agent (the dialer dedups live
// Sessions, so this costs one container list) and evict registry rows
// whose container is gone. The bus drops events for a slow subscriber and
// the events stream can miss events across a reconnect; this bounds how
// long such a miss can leave an agent undialed or a row orphaned.
const DefaultReconcileInterval = 30 * time.Second

// StartDeps bundles what Start needs. The spec's fields (Registry through
// Bus) are required; Log, ReconcileInterval and the optional capabilities
// below may be left zero.
type StartDeps struct {
	Registry     Registry
	DockerLister ContainerLister
	PeerLookup   ContainerByPeerIP
	Dialer       *Dialer
	Bus          *overseer.Overseer
	Log          *logger.Logger
	// Optional capabilities, passed explicitly by the wiring rather than
	// discovered on DockerLister or PeerLookup; nil means "not available".
	// Inventory answers both reconcile questions from one Docker list and
	// takes precedence over DockerLister and Running.
	Inventory AgentInventory
	// Running names the running agents to dial; nil counts every agent
	// container as running.
	Running RunningAgentLister
	// ReconcileInterval: 0 means DefaultReconcileInterval; negative
	// disables the periodic pass (the boot pass always runs).
	ReconcileInterval time.Duration
	// Worldview consumers are re-run from a Bus snapshot after every
	// reconcile pass, so a subscriber that acts on lossy bus events (the
	// containment policy) heals a dropped event within one interval.
	Worldview []WorldviewConsumer
}

// WorldviewConsumer re-derives its actions from a worldview snapshot. It
// must be idempotent: it sees the same untrusted agent on every pass.
type WorldviewConsumer interface {
	ReconcileWorldview(ctx context.Context, s *overseer.State)
}

// RunningAgentLister (StartDeps.Running) names the running agents to dial
// at boot. Without it Start dials every agent container and lets the
// dialer's inspect skip the stopped ones (at the cost of a
// SessionFailed{container_not_running} each).
type RunningAgentLister interface {
	ListRunningAgentContainerIDs(ctx context.Context) ([]string, error)
}

// AgentInventory (StartDeps.Inventory) answers both reconcile questions
// (which agent containers exist, which are running) from one Docker list.
// MobyPeerLookup implements it.
type AgentInventory interface {
	AgentContainerInventory(ctx context.Context) (all, running []string, err error)
}

// Start subscribes the evict and dial/cancel paths to DockerEvents, then
// runs one reconcile pass (reap orphan registry rows, dial every running
// agent) and keeps running one every ReconcileInterval. The returned
// cleanup unwinds in reverse order: it stops the reconciler, unsubscribes,
// then tears down every Session Start created.
func Start(ctx context.Context, deps StartDeps) (func(), error) {
	switch {
	case deps.Registry == nil:
		return nil, errors.New("agent.Start: nil Registry")
	case deps.DockerLister == nil:
		return nil, errors.New("agent.Start: nil DockerLister")
	case deps.PeerLookup == nil:
		return nil, errors.New("agent.Start: nil PeerLookup")
	case deps.Dialer == nil:
		return nil, errors.New("agent.Start: nil Dialer")
	case deps.Bus == nil:
		return nil, errors.New("agent.Start: nil Bus")
	}
	log := logger.OrNop(deps.Log)
	st := &starter{deps: deps, log: log}

	var undo []func()
	cleanup := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	undo = append(undo, deps.Dialer.CancelAll)
	// The bus's unsubscribe does not wait for an in-flight handler; the
	// gate does, so no handler can dial after cleanup's CancelAll.
	undo = append(undo, st.closeGate)
	undo = append(undo, deps.Bus.Subscribe("agent-evict", isDestroy, st.guard("agent-evict", st.onDestroy)))
	undo = append(undo, deps.Bus.Subscribe("agent-lifecycle", isLifecycle, st.guard("agent-lifecycle",
		func(e dockerevents.DockerEvent) { st.onLifecycle(ctx, e) })))
	undo = append(undo, deps.Bus.Subscribe("agent-network", isNetworkChange, st.guard("agent-network",
		func(e dockerevents.DockerEvent) { st.onNetworkChange(ctx, e) })))

	// Subscribed first, so a container starting during the boot pass is
	// seen by one or the other (the dialer dedups if both).
	dialed := st.reconcile(ctx, true)

	interval := deps.ReconcileInterval
	if interval == 0 {
		interval = DefaultReconcileInterval
	}
	if interval > 0 {
		undo = append(undo, st.runReconciler(ctx, interval))
	}
	log.Info().Str("event", "agent_start_done").Int("dialed", dialed).Msg("agent subsystem started")
	return cleanup, nil
}

type starter struct {
	deps StartDeps
	log  *logger.Logger

	// gate: handlers hold it shared while acting; closeGate takes it
	// exclusively and marks the starter closed.
	gate   sync.RWMutex
	closed bool
}

func (st *starter) closeGate() {
	st.gate.Lock()
	st.closed = true
	st.gate.Unlock()
}

// runReconciler runs reconcile every interval until the returned stop is
// called; stop waits for an in-flight pass to finish.
func (st *starter) runReconciler(ctx context.Context, interval time.Duration) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				st.log.Error().Str("event", "agent_reconcile_panic").Str("panic", fmt.Sprint(r)).
					Msg("reconciler panicked; recovered, periodic reconcile stopped")
			}
		}()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				st.reconcile(ctx, false)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-done
	}
}

// reconcile evicts registry rows whose container no longer exists,
// dials every running agent, then re-runs the Worldview consumers; it
// returns how many it asked to dial.
//
// The registry snapshot is taken BEFORE the container list: the agent
// listener is already serving, and a container can only register after
// it exists, so any row in the snapshot whose container is missing from
// the later list really is an orphan. (Listing first would let a
// container created and registered in between lose its fresh row.)
//
// A failed listing or snapshot never evicts (an empty list on error would
// wipe every row); at boot it publishes ReapDegraded, on the periodic
// pass it only logs.
func (st *starter) reconcile(ctx context.Context, boot bool) int {
	n := st.reconcileDocker(ctx, boot)
	st.reapplyWorldview(ctx)
	return n
}

// reapplyWorldview hands each WorldviewConsumer the current worldview. It
// runs even when the Docker list failed: the worldview does not need it.
func (st *starter) reapplyWorldview(ctx context.Context) {
	if len(st.deps.Worldview) == 0 {
		return
	}
	st.gate.RLock()
	defer st.gate.RUnlock()
	if st.closed {
		return
	}
	snap := st.deps.Bus.Snapshot()
	for i, c := range st.deps.Worldview {
		func() {
			defer func() {
				if r := recover(); r != nil {
					st.log.Error().Str("event", "agent_worldview_consumer_panic").Int("consumer", i).
						Str("panic", fmt.Sprint(r)).Msg("recovered; reconcile continues")
				}
			}()
			c.ReconcileWorldview(ctx, snap)
		}()
	}
}

// reconcileDocker is reconcile's Docker half: reap orphans, dial agents.
func (st *starter) reconcileDocker(ctx context.Context, boot bool) int {
	degraded := func(reason string, err error) {
		st.log.Warn().Str("event", "agent_reap_degraded").Str("reason", reason).Bool("boot", boot).Err(err).Msg("orphan reap skipped")
		if boot {
			st.deps.Bus.Publish(ReapDegraded{Reason: fmt.Sprintf("%s: %v", reason, err), At: time.Now()})
		}
	}
	rows, snapErr := st.deps.Registry.Snapshot()
	all, running, err := st.inventory(ctx)
	if err != nil {
		degraded("list containers", err)
		st.log.Error().Str("event", "agent_reconcile_list_failed").Err(err).Msg("could not list agents to dial; relying on events")
		return 0
	}

	// Act only while Start's cleanup has not run.
	st.gate.RLock()
	defer st.gate.RUnlock()
	if st.closed {
		return 0
	}
	if snapErr != nil {
		degraded("registry snapshot", snapErr)
	} else {
		st.evictOrphans(rows, all, degraded)
	}
	for _, id := range running {
		st.deps.Dialer.DialAgent(ctx, id)
	}
	return len(running)
}

func (st *starter) evictOrphans(rows []Entry, all []string, degraded func(string, error)) {
	live := make(map[string]bool, len(all))
	for _, id := range all {
		live[id] = true
	}
	var failed []string
	for _, r := range rows {
		if live[r.ContainerID] {
			continue
		}
		if err := st.deps.Registry.EvictByContainerID(r.ContainerID); err != nil {
			st.log.Warn().Str("event", "agent_reap_evict_failed").Str("container_id", r.ContainerID).Err(err).Msg("evict failed")
			failed = append(failed, r.ContainerID)
			continue
		}
		st.log.Info().Str("event", "agent_reaped").Str("container_id", r.ContainerID).Msg("orphan registry row evicted")
	}
	if len(failed) > 0 {
		degraded("evict", fmt.Errorf("%d rows: %s", len(failed), strings.Join(failed, ",")))
	}
}

// inventory lists the agent containers and the running ones, with one
// Docker list when an Inventory is wired. Without a Running lister every
// agent container counts as running and the dialer's inspect skips the
// stopped ones.
func (st *starter) inventory(ctx context.Context) (all, running []string, err error) {
	if st.deps.Inventory != nil {
		return st.deps.Inventory.AgentContainerInventory(ctx)
	}
	all, err = st.deps.DockerLister.ListAgentContainerIDs(ctx)
	if err != nil {
		return nil, nil, err
	}
	if st.deps.Running != nil {
		running, err = st.deps.Running.ListRunningAgentContainerIDs(ctx)
		if err != nil {
			return nil, nil, err
		}
		return all, running, nil
	}
	return all, all, nil
}

func isDestroy(e overseer.Event) bool {
	d, ok := e.(dockerevents.DockerEvent)
	return ok && d.Action == dockerevents.ActionDestroy
}

func isLifecycle(e overseer.Event) bool {
	d, ok := e.(dockerevents.DockerEvent)
	if !ok {
		return false
	}
	switch d.Action {
	case dockerevents.ActionStart, dockerevents.ActionRestart, dockerevents.ActionUnpause:
		return d.IsAgent()
	case dockerevents.ActionDie, dockerevents.ActionStop, dockerevents.ActionKill, dockerevents.ActionOOM:
		return true
	}
	return false
}

// guard adapts a DockerEvent handler and recovers its panics (the bus
// recovers too; this keeps the log line specific).
func (st *starter) guard(name string, fn func(dockerevents.DockerEvent)) func(overseer.Event) {
	return func(e overseer.Event) {
		defer func() {
			if r := recover(); r != nil {
				st.log.Error().Str("event", "agent_subscriber_panic").Str("subscriber", name).
					Str("panic", fmt.Sprint(r)).Msg("recovered")
			}
		}()
		st.gate.RLock()
		defer st.gate.RUnlock()
		if st.closed {
			return
		}
		if d, ok := e.(dockerevents.DockerEvent); ok {
			fn(d)
		}
	}
}

// onDestroy: the container is gone for good — end its Session, evict its row.
func (st *starter) onDestroy(e dockerevents.DockerEvent) {
	st.deps.Dialer.CancelDial(e.ContainerID)
	if err := st.deps.Registry.EvictByContainerID(e.ContainerID); err != nil {
		st.log.Warn().Str("event", "agent_evict_failed").Str("container_id", e.ContainerID).Err(err).
			Msg("evict on destroy failed; the next startup reap retries")
		return
	}
	st.log.Info().Str("event", "agent_evicted").Str("container_id", e.ContainerID).Msg("registry row evicted on destroy")
}

// onLifecycle handles start-like and stop-like events on one subscriber
// so they are processed in order (a restart's die must cancel the old
// Session before its start dials the new one).
//
// kill and oom cancel only when they end the container: a `docker kill -s
// HUP` or an OOM kill of a child leaves clawkerd running, and cancelling
// would strand it without a Session (nothing would re-dial). A real exit
// always emits die, which cancels.
func (st *starter) onLifecycle(ctx context.Context, e dockerevents.DockerEvent) {
	switch e.Action {
	case dockerevents.ActionStart, dockerevents.ActionRestart, dockerevents.ActionUnpause:
		st.deps.Dialer.DialAgent(ctx, e.ContainerID)
	case dockerevents.ActionDie, dockerevents.ActionStop:
		st.deps.Dialer.CancelDial(e.ContainerID)
	case dockerevents.ActionKill:
		if sig := e.Labels["signal"]; sig == "9" || sig == "SIGKILL" || sig == "KILL" {
			st.deps.Dialer.CancelDial(e.ContainerID)
		}
	case dockerevents.ActionOOM:
		st.log.Warn().Str("event", "agent_oom").Str("container_id", e.ContainerID).Msg("OOM in agent container")
		if ev, ok := oomEvent(e); ok {
			st.deps.Bus.Publish(ev)
		}
	}
}
