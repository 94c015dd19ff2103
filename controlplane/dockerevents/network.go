package dockerevents

import (
	"maps"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
)

// Network actions: a container joined or left a network. They are
// published as DockerEvents of the container (ContainerID is the attached
// container, Labels its labels plus "network" and "network_id"), so
// consumers need not know which network an agent uses.
const (
	ActionNetworkConnect    = "connect"
	ActionNetworkDisconnect = "disconnect"
)

// WithNetworkEvents also follows network connect/disconnect events and
// publishes those of containers in the feed's scope (the label filter
// cannot select them: a network event carries the network's attributes,
// not the container's labels). The CP uses them to redial an agent whose
// path broke or healed at once, instead of waiting for keepalive or the
// periodic reconcile.
func WithNetworkEvents() Option { return func(f *Feeder) { f.networks = true } }

// networkEvents opens the network stream, or returns nil channels (never
// ready) when the feed does not follow networks.
func (f *Feeder) networkEvents(sf func(client.EventsListOptions) client.EventsResult) (<-chan events.Message, <-chan error) {
	if !f.networks {
		return nil, nil
	}
	fl := make(client.Filters).Add("type", string(events.NetworkEventType)).
		Add("event", ActionNetworkConnect, ActionNetworkDisconnect)
	res := sf(client.EventsListOptions{Filters: fl})
	return res.Messages, res.Err
}

// handleNetwork publishes a connect/disconnect of a container the feed
// knows (one within its label scope). Network events are not replayed on
// a reconnect: a change missed in the gap is caught by the Session's
// keepalive or the CP's periodic reconcile.
func (f *Feeder) handleNetwork(m events.Message) {
	id := m.Actor.Attributes["container"]
	k, ok := f.known[id]
	if id == "" || !ok {
		return
	}
	action := string(m.Action)
	if action != ActionNetworkConnect && action != ActionNetworkDisconnect {
		return
	}
	labels := maps.Clone(k.labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels["network"] = m.Actor.Attributes["name"]
	labels["network_id"] = m.Actor.ID
	at := time.Unix(0, m.TimeNano)
	if m.TimeNano == 0 {
		at = time.Unix(m.Time, 0)
	}
	f.setHealth(func(h *Health) { h.LastEvent = at; h.Events++ })
	f.bus.Publish(DockerEvent{Action: action, ContainerID: id, Labels: labels, At: at})
}
