package overseer

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/logger"
)

type testEvent struct {
	id   string
	seq  int
	at   time.Time
	step int
}

func (e testEvent) EventName() string     { return "test_event" }
func (e testEvent) OccurredAt() time.Time { return e.at }
func (e testEvent) ApplyTo(s *State) {
	a := s.Agent(e.id)
	a.InitStepIndex = e.step
	a.Attempts++
}

type plainEvent struct{ at time.Time }

func (plainEvent) EventName() string       { return "plain" }
func (p plainEvent) OccurredAt() time.Time { return p.at }

type panicApply struct{}

func (panicApply) EventName() string     { return "panic_apply" }
func (panicApply) OccurredAt() time.Time { return time.Now() }
func (panicApply) ApplyTo(*State)        { panic("boom") }

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

func TestPublishFoldsIntoStateAndDelivers(t *testing.T) {
	bus := New(nil)
	var got []int
	var mu sync.Mutex
	unsub := bus.Subscribe("collector", func(e Event) bool { _, ok := e.(testEvent); return ok }, func(e Event) {
		mu.Lock()
		got = append(got, e.(testEvent).seq)
		mu.Unlock()
	})
	defer unsub()

	for i := 0; i < 10; i++ {
		bus.Publish(testEvent{id: "c1", seq: i, step: i, at: time.Now()})
		bus.Publish(plainEvent{at: time.Now()})
	}
	waitFor(t, "10 deliveries", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 10 })
	mu.Lock()
	for i, v := range got {
		if v != i {
			t.Fatalf("delivery out of order: %v", got)
		}
	}
	mu.Unlock()

	snap := bus.Snapshot()
	a := snap.Agents["c1"]
	if a == nil || a.Attempts != 10 || a.InitStepIndex != 9 {
		t.Fatalf("state not folded: %+v", a)
	}
	// Snapshot is a deep copy.
	a.Attempts = 99
	if bus.Snapshot().Agents["c1"].Attempts != 10 {
		t.Fatal("snapshot aliases live state")
	}
}

func TestSlowSubscriberNeverBlocksPublisher(t *testing.T) {
	logs := &logger.SyncBuffer{}
	bus := New(logger.New(logs, "debug", "test"), WithSubscriberBuffer(4))
	release := make(chan struct{})
	var fastCount atomic.Int64
	unsubSlow := bus.Subscribe("slow", nil, func(Event) { <-release })
	defer unsubSlow()
	unsubFast := bus.Subscribe("fast", nil, func(Event) { fastCount.Add(1) })
	defer unsubFast()

	const n = 1000
	done := make(chan struct{})
	go func() {
		for i := 0; i < n; i++ {
			bus.Publish(testEvent{id: "c", seq: i, at: time.Now()})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("publisher blocked behind a wedged subscriber")
	}
	close(release)
	if d := bus.Drops()["slow"]; d == 0 || d > n {
		t.Fatalf("slow subscriber drops = %d, want in (0,%d]", d, n)
	}
	if bus.Snapshot().Agents["c"].Attempts != n {
		t.Fatal("state must fold every event regardless of subscriber drops")
	}
	if !strings.Contains(logs.String(), `"event":"bus_subscriber_drop"`) {
		t.Fatalf("drop not logged: %s", logs.String())
	}
	waitFor(t, "fast subscriber progress", func() bool { return fastCount.Load() > 0 })
}

func TestSubscriberPanicRecovered(t *testing.T) {
	logs := &logger.SyncBuffer{}
	bus := New(logger.New(logs, "debug", "test"))
	var calls atomic.Int64
	unsub := bus.Subscribe("panicky", nil, func(e Event) {
		if calls.Add(1) == 1 {
			panic("first event explodes")
		}
	})
	defer unsub()
	bus.Publish(plainEvent{at: time.Now()})
	bus.Publish(plainEvent{at: time.Now()})
	bus.Publish(panicApply{}) // ApplyTo panic is recovered too
	waitFor(t, "subscriber survives its panic", func() bool { return calls.Load() == 3 })
	if !strings.Contains(logs.String(), `"event":"bus_subscriber_panic"`) ||
		!strings.Contains(logs.String(), `"event":"bus_apply_panic"`) {
		t.Fatalf("panics not logged: %s", logs.String())
	}
	// A panicking filter skips the event instead of killing Publish.
	unsub2 := bus.Subscribe("badfilter", func(Event) bool { panic("filter") }, func(Event) {})
	defer unsub2()
	bus.Publish(plainEvent{at: time.Now()})
	if !strings.Contains(logs.String(), `"event":"bus_filter_panic"`) {
		t.Fatal("filter panic not logged")
	}
}

func TestUnsubscribeStopsDelivery(t *testing.T) {
	bus := New(nil)
	var calls atomic.Int64
	unsub := bus.Subscribe("x", nil, func(Event) { calls.Add(1) })
	bus.Publish(plainEvent{at: time.Now()})
	waitFor(t, "first delivery", func() bool { return calls.Load() == 1 })
	unsub()
	unsub() // idempotent
	bus.Publish(plainEvent{at: time.Now()})
	if got := bus.Stats().Subscribers; len(got) != 0 {
		t.Fatalf("subscriber still registered: %v", got)
	}
	if calls.Load() != 1 {
		t.Fatal("delivered after unsubscribe")
	}
}

func TestRecentRingAndSnapshotSubscribe(t *testing.T) {
	bus := New(nil, WithRecentEvents(3))
	base := time.Now()
	for i := 0; i < 5; i++ {
		bus.Publish(testEvent{id: "c", seq: i, at: base.Add(time.Duration(i) * time.Second)})
	}
	all := bus.Recent(time.Time{})
	if len(all) != 3 || all[0].(testEvent).seq != 2 || all[2].(testEvent).seq != 4 {
		t.Fatalf("ring = %+v", all)
	}
	if r := bus.Recent(base.Add(4 * time.Second)); len(r) != 1 || r[0].(testEvent).seq != 4 {
		t.Fatalf("since filter = %+v", r)
	}

	var got atomic.Int64
	snap, unsub := bus.SubscribeWithSnapshot("w", nil, func(Event) { got.Add(1) })
	defer unsub()
	if snap.Agents["c"].Attempts != 5 {
		t.Fatalf("snapshot = %+v", snap.Agents["c"])
	}
	bus.Publish(testEvent{id: "c", at: time.Now()})
	waitFor(t, "post-snapshot event", func() bool { return got.Load() == 1 })
}
