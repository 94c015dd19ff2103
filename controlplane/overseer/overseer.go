package overseer

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/clawker/clawker/internal/logger"
)

// Defaults for the bus. A subscriber buffer of 256 absorbs a burst of one
// agent's full lifecycle (≈15 events) for a dozen agents starting together
// without a drop; the ring keeps enough history for an admin watcher that
// reconnects after a short blip.
const (
	DefaultSubscriberBuffer = 256
	DefaultRecentEvents     = 1024
	// dropLogEvery throttles drop logging: the first drop of a subscriber
	// and then every dropLogEvery-th are logged, so a wedged subscriber
	// cannot turn the log into the bottleneck the bus avoids.
	dropLogEvery = 100
)

// Option configures an Overseer.
type Option func(*Overseer)

// WithSubscriberBuffer sets the per-subscriber buffer (minimum 1).
func WithSubscriberBuffer(n int) Option {
	return func(o *Overseer) {
		if n > 0 {
			o.bufSize = n
		}
	}
}

// WithRecentEvents sets the size of the replay ring (0 disables it).
func WithRecentEvents(n int) Option {
	return func(o *Overseer) {
		if n >= 0 {
			o.ringCap = n
		}
	}
}

// Overseer is the typed in-process event bus and owner of the State
// worldview. Publish folds an Applier into State and then fans the event
// out to every matching subscriber without ever blocking: each subscriber
// has its own bounded buffer and its own goroutine, and a full buffer
// drops (counted, logged) rather than back-pressures the publisher.
type Overseer struct {
	log *logger.Logger

	// mu serialises Publish so that State, the ring and every subscriber
	// observe events in one total order.
	mu      sync.Mutex
	state   *State
	subs    map[uint64]*subscriber
	nextID  uint64
	drops   map[string]uint64
	ring    []Event
	ringPos int
	ringCap int
	bufSize int
	total   uint64
}

type subscriber struct {
	id      uint64
	name    string
	filter  func(Event) bool
	handler func(Event)
	ch      chan Event
	quit    chan struct{}
	done    chan struct{}
}

// New returns a ready bus. log may be nil.
func New(log *logger.Logger, opts ...Option) *Overseer {
	o := &Overseer{
		log:     logger.OrNop(log),
		state:   NewState(),
		subs:    map[uint64]*subscriber{},
		drops:   map[string]uint64{},
		bufSize: DefaultSubscriberBuffer,
		ringCap: DefaultRecentEvents,
	}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// Publish applies e to the worldview (when it is an Applier) and delivers
// it to every subscriber whose filter accepts it. It never blocks on a
// subscriber. A nil event is ignored. Filters run under the bus lock and
// must be pure (no calls back into the bus).
func (o *Overseer) Publish(e Event) {
	if o == nil || e == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.total++
	if a, ok := e.(Applier); ok {
		o.apply(a)
	}
	if o.ringCap > 0 {
		if len(o.ring) < o.ringCap {
			o.ring = append(o.ring, e)
		} else {
			o.ring[o.ringPos] = e
			o.ringPos = (o.ringPos + 1) % o.ringCap
		}
	}
	for _, s := range o.subs {
		if !o.accepts(s, e) {
			continue
		}
		select {
		case s.ch <- e:
		default:
			o.drops[s.name]++
			n := o.drops[s.name]
			if n == 1 || n%dropLogEvery == 0 {
				o.log.Warn().Str("event", "bus_subscriber_drop").Str("subscriber", s.name).
					Str("dropped_event", e.EventName()).Uint64("drops", n).
					Msg("subscriber buffer full; event dropped")
			}
		}
	}
}

// apply folds a into State, recovering a panicking ApplyTo so one bad
// event type cannot take the bus down.
func (o *Overseer) apply(a Applier) {
	defer func() {
		if r := recover(); r != nil {
			o.log.Error().Str("event", "bus_apply_panic").Str("bus_event", a.EventName()).
				Str("panic", fmt.Sprint(r)).Msg("ApplyTo panicked; worldview not updated")
		}
	}()
	a.ApplyTo(o.state)
}

func (o *Overseer) accepts(s *subscriber, e Event) (ok bool) {
	if s.filter == nil {
		return true
	}
	defer func() {
		if r := recover(); r != nil {
			ok = false
			o.log.Error().Str("event", "bus_filter_panic").Str("subscriber", s.name).
				Str("panic", fmt.Sprint(r)).Msg("subscriber filter panicked; event skipped")
		}
	}()
	return s.filter(e)
}

// Subscribe registers handler for events accepted by filter (nil = all).
// handler runs on the subscriber's own goroutine, one event at a time, in
// publish order; a panic in it is recovered and logged and the subscriber
// keeps running. The returned func unsubscribes; it is idempotent, does
// not wait for an in-flight handler, and discards still-buffered events.
func (o *Overseer) Subscribe(name string, filter func(Event) bool, handler func(Event)) (unsubscribe func()) {
	_, unsub := o.subscribe(name, filter, handler, false)
	return unsub
}

// SubscribeWithSnapshot is Subscribe plus a worldview snapshot taken
// atomically with the registration: every event not reflected in the
// snapshot is delivered to handler, and none that is reflected is.
func (o *Overseer) SubscribeWithSnapshot(name string, filter func(Event) bool, handler func(Event)) (*State, func()) {
	return o.subscribe(name, filter, handler, true)
}

func (o *Overseer) subscribe(name string, filter func(Event) bool, handler func(Event), snap bool) (*State, func()) {
	if handler == nil {
		return nil, func() {}
	}
	s := &subscriber{
		name:    name,
		filter:  filter,
		handler: handler,
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	o.mu.Lock()
	s.ch = make(chan Event, o.bufSize)
	o.nextID++
	s.id = o.nextID
	o.subs[s.id] = s
	var st *State
	if snap {
		st = o.state.Clone()
	}
	o.mu.Unlock()

	go o.run(s)

	var once sync.Once
	return st, func() {
		once.Do(func() {
			o.mu.Lock()
			delete(o.subs, s.id)
			o.mu.Unlock()
			close(s.quit)
		})
	}
}

func (o *Overseer) run(s *subscriber) {
	defer close(s.done)
	for {
		select {
		case <-s.quit:
			return
		case e := <-s.ch:
			select {
			case <-s.quit:
				return
			default:
			}
			o.deliver(s, e)
		}
	}
}

func (o *Overseer) deliver(s *subscriber, e Event) {
	defer func() {
		if r := recover(); r != nil {
			o.log.Error().Str("event", "bus_subscriber_panic").Str("subscriber", s.name).
				Str("bus_event", e.EventName()).Str("panic", fmt.Sprint(r)).
				Msg("subscriber handler panicked; recovered")
		}
	}()
	s.handler(e)
}

// Snapshot returns a deep copy of the worldview.
func (o *Overseer) Snapshot() *State {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.state.Clone()
}

// Agent returns a copy of one agent's worldview entry.
func (o *Overseer) Agent(containerID string) (AgentState, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	a, ok := o.state.Agents[containerID]
	if !ok {
		return AgentState{}, false
	}
	cp := *a
	cp.UntrustedReasons = append([]UntrustedReason(nil), a.UntrustedReasons...)
	return cp, true
}

// Recent returns the retained events that occurred at or after since, in
// publish order. A zero since returns the whole ring.
func (o *Overseer) Recent(since time.Time) []Event {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]Event, 0, len(o.ring))
	n := len(o.ring)
	for i := 0; i < n; i++ {
		e := o.ring[(o.ringPos+i)%n]
		if since.IsZero() || !e.OccurredAt().Before(since) {
			out = append(out, e)
		}
	}
	return out
}

// Drops returns the cumulative number of dropped deliveries per
// subscriber name (kept after unsubscribe, for metrics).
func (o *Overseer) Drops() map[string]uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[string]uint64, len(o.drops))
	for k, v := range o.drops {
		out[k] = v
	}
	return out
}

// Stats is a point-in-time summary of the bus for metrics and health.
type Stats struct {
	Published   uint64
	Subscribers []string
	Dropped     uint64
}

// Stats returns the bus counters.
func (o *Overseer) Stats() Stats {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := Stats{Published: o.total}
	for _, s := range o.subs {
		st.Subscribers = append(st.Subscribers, s.name)
	}
	sort.Strings(st.Subscribers)
	for _, v := range o.drops {
		st.Dropped += v
	}
	return st
}
