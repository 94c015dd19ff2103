package dockerevents

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"

	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/backoff"
	"github.com/clawker/clawker/internal/consts"
)

// fakeAPI is a Docker events + list API whose stream the test breaks.
type fakeAPI struct {
	mu         sync.Mutex
	containers map[string]container.ContainerState
	streams    []*fakeStream
	sinces     []string
	listErr    error
	listCalls  int
	opened     chan struct{}
}

type fakeStream struct {
	msgs chan events.Message
	errs chan error
}

func newFakeAPI() *fakeAPI {
	return &fakeAPI{containers: map[string]container.ContainerState{}, opened: make(chan struct{}, 16)}
}

func (f *fakeAPI) Events(ctx context.Context, o client.EventsListOptions) client.EventsResult {
	s := &fakeStream{msgs: make(chan events.Message), errs: make(chan error, 1)}
	f.mu.Lock()
	f.streams = append(f.streams, s)
	f.sinces = append(f.sinces, o.Since)
	f.mu.Unlock()
	f.opened <- struct{}{}
	return client.EventsResult{Messages: s.msgs, Err: s.errs}
}

func (f *fakeAPI) ContainerList(ctx context.Context, o client.ContainerListOptions) (client.ContainerListResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listCalls++
	if f.listErr != nil {
		return client.ContainerListResult{}, f.listErr
	}
	var out client.ContainerListResult
	for id, st := range f.containers {
		out.Items = append(out.Items, container.Summary{ID: id, State: st,
			Labels: map[string]string{consts.LabelPurpose: consts.PurposeAgent}})
	}
	return out, nil
}

func (f *fakeAPI) current() *fakeStream {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.streams[len(f.streams)-1]
}

func (f *fakeAPI) set(id string, st container.ContainerState) {
	f.mu.Lock()
	f.containers[id] = st
	f.mu.Unlock()
}

func (f *fakeAPI) remove(id string) {
	f.mu.Lock()
	delete(f.containers, id)
	f.mu.Unlock()
}

type collector struct {
	mu sync.Mutex
	ev []DockerEvent
}

func (c *collector) Publish(e overseer.Event) {
	if d, ok := e.(DockerEvent); ok {
		c.mu.Lock()
		c.ev = append(c.ev, d)
		c.mu.Unlock()
	}
}

func (c *collector) snapshot() []DockerEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]DockerEvent(nil), c.ev...)
}

func (c *collector) find(action, id string, synthesized bool) bool {
	for _, e := range c.snapshot() {
		if e.Action == action && e.ContainerID == id && e.Synthesized == synthesized {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func waitOpened(t *testing.T, api *fakeAPI) {
	t.Helper()
	select {
	case <-api.opened:
	case <-time.After(5 * time.Second):
		t.Fatal("stream not (re)opened")
	}
}

func msg(action events.Action, id string, nano int64) events.Message {
	return events.Message{Type: events.ContainerEventType, Action: action,
		Actor: events.Actor{ID: id, Attributes: map[string]string{consts.LabelPurpose: consts.PurposeAgent}},
		Time:  nano / 1e9, TimeNano: nano}
}

func TestFeederReconnectsResumesAndReconciles(t *testing.T) {
	api := newFakeAPI()
	api.set("keep", container.StateRunning)
	api.set("stopme", container.StateRunning)
	api.set("gone", container.StateExited)
	bus := &collector{}
	var hooks atomic.Int64
	f, err := New(api, bus, nil, AgentLabel(), WithBackoff(time.Millisecond, 5*time.Millisecond),
		WithReconnectHook(func(context.Context) { hooks.Add(1) }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	}()

	waitOpened(t, api)
	waitFor(t, "connected", func() bool { return f.Health().Connected })
	if len(bus.snapshot()) != 0 {
		t.Fatalf("first reconcile must only seed the baseline, got %+v", bus.snapshot())
	}
	const t0 = int64(1_700_000_000_123_456_789)
	api.current().msgs <- msg(events.ActionStart, "live", t0)
	waitFor(t, "live start", func() bool { return bus.find(ActionStart, "live", false) })

	// While the stream is down: a container starts, one stops, one is removed.
	api.set("new", container.StateRunning)
	api.set("stopme", container.StateExited)
	api.remove("gone")
	api.remove("live")
	api.current().errs <- errors.New("unexpected EOF")

	waitOpened(t, api)
	waitFor(t, "synthesized start", func() bool { return bus.find(ActionStart, "new", true) })
	waitFor(t, "synthesized die", func() bool { return bus.find(ActionDie, "stopme", true) })
	waitFor(t, "synthesized destroy", func() bool { return bus.find(ActionDestroy, "gone", true) })
	waitFor(t, "synthesized destroy of streamed container", func() bool { return bus.find(ActionDestroy, "live", true) })
	if bus.find(ActionStart, "keep", true) {
		t.Fatal("unchanged running container must not get a synthesized start")
	}
	api.mu.Lock()
	since := api.sinces[1]
	api.mu.Unlock()
	if since != "1700000000.123456789" {
		t.Fatalf("resume since = %q, want the last event time", since)
	}
	// The resumed stream replays the boundary event: it must be skipped.
	before := len(bus.snapshot())
	api.current().msgs <- msg(events.ActionStart, "live", t0)
	api.current().msgs <- msg(events.ActionDie, "keep", t0+1)
	waitFor(t, "post-resume event", func() bool { return bus.find(ActionDie, "keep", false) })
	if got := len(bus.snapshot()) - before; got != 1 {
		t.Fatalf("replayed boundary event delivered again: %d new events", got)
	}
	h := f.Health()
	if h.Reconnects != 1 || !h.Connected || h.Events != 2 {
		t.Fatalf("health = %+v", h)
	}
	if hooks.Load() != 1 {
		t.Fatalf("reconnect hook ran %d times, want 1 (not on first connect)", hooks.Load())
	}
}

func TestFeederListErrorIsRetried(t *testing.T) {
	api := newFakeAPI()
	api.listErr = errors.New("daemon down")
	bus := &collector{}
	f, err := New(api, bus, nil, WithBackoff(time.Millisecond, 2*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = f.Run(ctx) }()
	go func() {
		for range api.opened {
		}
	}()
	waitFor(t, "several reconnects", func() bool { return f.Health().Reconnects >= 3 })
	if f.Health().Connected || f.Health().LastError == "" {
		t.Fatalf("health must report the outage: %+v", f.Health())
	}
	api.mu.Lock()
	api.listErr = nil
	api.mu.Unlock()
	waitFor(t, "recovered", func() bool { return f.Health().Connected })
}

func TestBackoffBounds(t *testing.T) {
	for attempt := 1; attempt < 40; attempt++ {
		for i := 0; i < 50; i++ {
			d := backoff.FullJitter(10*time.Millisecond, time.Second, attempt)
			limit := 10 * time.Millisecond << (attempt - 1)
			if attempt > 8 || limit > time.Second {
				limit = time.Second
			}
			if d < 0 || d > limit {
				t.Fatalf("attempt %d: backoff %v outside [0,%v]", attempt, d, limit)
			}
		}
	}
}

func TestNewRejectsNil(t *testing.T) {
	if _, err := New(nil, &collector{}, nil); err == nil {
		t.Fatal("nil api accepted")
	}
	if _, err := New(newFakeAPI(), nil, nil); err == nil {
		t.Fatal("nil bus accepted")
	}
}

func TestDestroyEvictsWorldview(t *testing.T) {
	s := overseer.NewState()
	s.Agent("c1")
	DockerEvent{Action: ActionDie, ContainerID: "c1"}.ApplyTo(s)
	if _, ok := s.Agents["c1"]; !ok {
		t.Fatal("die must not drop the row")
	}
	DockerEvent{Action: ActionDestroy, ContainerID: "c1"}.ApplyTo(s)
	if _, ok := s.Agents["c1"]; ok {
		t.Fatal("destroy must drop the row")
	}
}

// TestFeederKeepsOutOfOrderLiveEvents: Docker can deliver concurrent
// containers' events slightly out of time order; the live stream must
// deliver every one (dropping an older destroy left ghost agents).
func TestFeederKeepsOutOfOrderLiveEvents(t *testing.T) {
	api := newFakeAPI()
	bus := &collector{}
	f, err := New(api, bus, nil, WithBackoff(time.Millisecond, 5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitOpened(t, api)
	waitFor(t, "connected", func() bool { return f.Health().Connected })

	const t0 = int64(1_700_000_000_000_000_000)
	api.current().msgs <- msg(events.ActionStart, "a", t0+10)
	api.current().msgs <- msg(events.ActionDestroy, "b", t0+5) // older, arrives later
	api.current().msgs <- msg(events.ActionDestroy, "c", t0+10)
	waitFor(t, "older destroy delivered", func() bool { return bus.find(ActionDestroy, "b", false) })
	waitFor(t, "same-time event delivered", func() bool { return bus.find(ActionDestroy, "c", false) })
}
