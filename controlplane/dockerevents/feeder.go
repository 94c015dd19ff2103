package dockerevents

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"

	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/backoff"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// Reconnect backoff: exponential with full jitter. The base is short so a
// daemon blip costs little; the cap keeps a dead daemon from being
// hammered while bounding how stale the worldview can get once it is back.
const (
	reconnectBase = 100 * time.Millisecond
	reconnectCap  = 10 * time.Second
)

// API is the slice of the Docker client the feeder needs; *client.Client
// satisfies it.
type API interface {
	Events(ctx context.Context, options client.EventsListOptions) client.EventsResult
	ContainerList(ctx context.Context, options client.ContainerListOptions) (client.ContainerListResult, error)
}

// Publisher is where events go; *overseer.Overseer satisfies it.
type Publisher interface {
	Publish(e overseer.Event)
}

// Health is the feeder's self-report for /healthz and metrics.
type Health struct {
	Connected  bool
	Since      time.Time // when the current stream (or outage) began
	LastEvent  time.Time
	Reconnects int
	Events     uint64
	LastError  string
}

// Option configures a Feeder.
type Option func(*Feeder)

// WithLabel restricts the feed (stream and reconcile) to containers
// carrying label=value. The CP uses dev.clawker.purpose=agent.
func WithLabel(label, value string) Option {
	return func(f *Feeder) { f.labels = append(f.labels, label+"="+value) }
}

// WithBackoff overrides the reconnect backoff (tests).
func WithBackoff(base, cap time.Duration) Option {
	return func(f *Feeder) {
		if base > 0 && cap >= base {
			f.base, f.cap = base, cap
		}
	}
}

// WithReconnectHook registers fn to run after every successful reconnect
// (not the first connect), once the reconcile events are published — e.g.
// peerid.Index.Refresh, whose index may have missed events in the gap.
// fn runs on the feeder goroutine; a panic in it is recovered.
func WithReconnectHook(fn func(ctx context.Context)) Option {
	return func(f *Feeder) { f.onReconnect = fn }
}

// Feeder turns the Docker events stream into DockerEvents on the bus.
type Feeder struct {
	api         API
	bus         Publisher
	log         *logger.Logger
	labels      []string
	base, cap   time.Duration
	onReconnect func(ctx context.Context)
	networks    bool // WithNetworkEvents

	// known is the container set as last observed (id → running), the
	// baseline the reconcile diffs a fresh listing against. Touched only
	// by the Run goroutine.
	known map[string]knownContainer
	// lastNano is the newest event time seen, the resume point; lastKeys
	// are the events seen at exactly that time.
	lastNano int64
	lastKeys map[string]struct{}
	// resumeNano / resumeKeys hold the resume point while a resumed stream
	// replays (Docker's `since` is inclusive): only those events are
	// duplicates. The live stream is never filtered by time, because Docker
	// may deliver concurrent containers' events slightly out of time order
	// and dropping one would lose, say, a destroy.
	resumeNano int64
	resumeKeys map[string]struct{}

	mu     sync.Mutex
	health Health
}

type knownContainer struct {
	running bool
	labels  map[string]string
}

// New returns a Feeder. api and bus are required.
func New(api API, bus Publisher, log *logger.Logger, opts ...Option) (*Feeder, error) {
	if api == nil {
		return nil, errors.New("dockerevents: nil docker API")
	}
	if bus == nil {
		return nil, errors.New("dockerevents: nil bus")
	}
	f := &Feeder{api: api, bus: bus, log: logger.OrNop(log), base: reconnectBase, cap: reconnectCap,
		known: map[string]knownContainer{}}
	for _, o := range opts {
		o(f)
	}
	return f, nil
}

// Health returns a copy of the feeder's health.
func (f *Feeder) Health() Health {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.health
}

func (f *Feeder) setHealth(fn func(h *Health)) {
	f.mu.Lock()
	fn(&f.health)
	f.mu.Unlock()
}

func (f *Feeder) filters() client.Filters {
	fl := make(client.Filters).Add("type", string(events.ContainerEventType))
	if len(f.labels) > 0 {
		fl.Add("label", f.labels...)
	}
	return fl
}

// Run feeds events until ctx is cancelled, reconnecting on every stream
// break. It returns ctx.Err(). It never panics out: a panic in one stream
// cycle is recovered, logged and treated as a stream break.
func (f *Feeder) Run(ctx context.Context) error {
	attempt := 0
	first := true
	for {
		ok, err := f.cycle(ctx, first)
		if ctx.Err() != nil {
			f.setHealth(func(h *Health) { h.Connected = false })
			return ctx.Err()
		}
		if ok {
			first = false
			attempt = 0
		}
		attempt++
		f.setHealth(func(h *Health) {
			h.Connected = false
			h.Since = time.Now()
			h.Reconnects++
			if err != nil {
				h.LastError = err.Error()
			}
		})
		delay := backoff.FullJitter(f.base, f.cap, attempt)
		f.log.Warn().Str("event", "docker_events_reconnect").Err(err).Int("attempt", attempt).
			Dur("backoff", delay).Msg("docker events stream broken; reconnecting")
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			f.setHealth(func(h *Health) { h.Connected = false })
			return ctx.Err()
		case <-t.C:
		}
	}
}

// cycle opens one stream, reconciles, and pumps until it breaks. ok
// reports whether the stream came up (reconcile succeeded), which resets
// the backoff.
func (f *Feeder) cycle(ctx context.Context, first bool) (ok bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			f.log.Error().Str("event", "docker_events_panic").Str("panic", fmt.Sprint(r)).Msg("recovered")
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()

	opts := client.EventsListOptions{Filters: f.filters()}
	f.resumeNano, f.resumeKeys = 0, nil
	if f.lastNano > 0 {
		opts.Since = fmt.Sprintf("%d.%09d", f.lastNano/1e9, f.lastNano%1e9)
		f.resumeNano, f.resumeKeys = f.lastNano, maps.Clone(f.lastKeys)
	}
	// Subscribe before listing so nothing falls between the two: a change
	// after the listing arrives on the stream; one before it is in the
	// listing. Either way consumers see the final state last.
	res := f.api.Events(sctx, opts)
	netMsgs, netErrs := f.networkEvents(func(o client.EventsListOptions) client.EventsResult { return f.api.Events(sctx, o) })
	if err := f.reconcile(sctx, first); err != nil {
		return false, fmt.Errorf("reconcile: %w", err)
	}
	f.setHealth(func(h *Health) { h.Connected = true; h.Since = time.Now(); h.LastError = "" })
	if !first && f.onReconnect != nil {
		f.onReconnect(sctx)
	}
	f.log.Info().Str("event", "docker_events_connected").Bool("first", first).Msg("docker events stream up")

	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case err, open := <-res.Err:
			if !open || err == nil {
				err = errors.New("events stream closed")
			}
			return true, err
		case m, open := <-res.Messages:
			if !open {
				return true, errors.New("events stream closed")
			}
			f.handle(m)
		case err, open := <-netErrs:
			if !open || err == nil {
				err = errors.New("network events stream closed")
			}
			return true, err
		case m, open := <-netMsgs:
			if !open {
				return true, errors.New("network events stream closed")
			}
			f.handleNetwork(m)
		}
	}
}

func (f *Feeder) handle(m events.Message) {
	if m.Type != "" && m.Type != events.ContainerEventType {
		return
	}
	nano := m.TimeNano
	if nano == 0 {
		nano = m.Time * 1e9
	}
	key := string(m.Action) + "/" + m.Actor.ID
	if f.resumeNano != 0 {
		if nano < f.resumeNano {
			return // replayed from before the resume point
		}
		if nano == f.resumeNano {
			if _, seen := f.resumeKeys[key]; seen {
				return
			}
		} else {
			f.resumeNano, f.resumeKeys = 0, nil // the replay is over
		}
	}
	switch {
	case nano > f.lastNano:
		f.lastNano, f.lastKeys = nano, map[string]struct{}{key: {}}
	case nano == f.lastNano:
		f.lastKeys[key] = struct{}{}
	}
	action := string(m.Action)
	labels := make(map[string]string, len(m.Actor.Attributes))
	for k, v := range m.Actor.Attributes {
		labels[k] = v
	}
	f.track(m.Actor.ID, action, labels)
	at := time.Unix(0, nano)
	f.setHealth(func(h *Health) { h.LastEvent = at; h.Events++ })
	f.bus.Publish(DockerEvent{Action: action, ContainerID: m.Actor.ID, Labels: labels, At: at})
}

// track keeps the reconcile baseline in step with the stream.
func (f *Feeder) track(id, action string, labels map[string]string) {
	switch action {
	case ActionDestroy:
		delete(f.known, id)
	case ActionStart, ActionRestart, ActionUnpause:
		f.known[id] = knownContainer{running: true, labels: labels}
	case ActionDie, ActionStop:
		// kill/oom are not tracked: a kill may not terminate, and die follows
		// every real exit.
		f.known[id] = knownContainer{running: false, labels: labels}
	case ActionCreate:
		if _, ok := f.known[id]; !ok {
			f.known[id] = knownContainer{labels: labels}
		}
	}
}

// reconcile lists containers and, after a reconnect, synthesizes the
// transitions the stream missed: start for newly running, die for no
// longer running, destroy for vanished. The first listing only seeds the
// baseline: at boot agent.Start dials every running agent itself.
func (f *Feeder) reconcile(ctx context.Context, first bool) error {
	lopts := client.ContainerListOptions{All: true}
	if len(f.labels) > 0 {
		lopts.Filters = make(client.Filters).Add("label", f.labels...)
	}
	res, err := f.api.ContainerList(ctx, lopts)
	if err != nil {
		return err
	}
	now := time.Now()
	seen := make(map[string]bool, len(res.Items))
	var out []DockerEvent
	for _, c := range res.Items {
		seen[c.ID] = true
		running := c.State == container.StateRunning
		prev, had := f.known[c.ID]
		f.known[c.ID] = knownContainer{running: running, labels: c.Labels}
		if first {
			continue
		}
		switch {
		case running && (!had || !prev.running):
			out = append(out, DockerEvent{Action: ActionStart, ContainerID: c.ID, Labels: c.Labels, At: now, Synthesized: true})
		case !running && had && prev.running:
			out = append(out, DockerEvent{Action: ActionDie, ContainerID: c.ID, Labels: c.Labels, At: now, Synthesized: true})
		}
	}
	for id, k := range f.known {
		if seen[id] {
			continue
		}
		delete(f.known, id)
		if !first {
			out = append(out, DockerEvent{Action: ActionDestroy, ContainerID: id, Labels: k.labels, At: now, Synthesized: true})
		}
	}
	for _, e := range out {
		f.log.Info().Str("event", "docker_events_reconciled").Str("action", e.Action).
			Str("container_id", e.ContainerID).Msg("synthesized missed container event")
		f.bus.Publish(e)
	}
	return nil
}

// AgentLabel is the label filter the CP feeds with.
func AgentLabel() Option { return WithLabel(consts.LabelPurpose, consts.PurposeAgent) }
