package egress

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/egress/gateway"
)

// Decision is what both decision events carry. Flat string fields, so
// `clawker events` and `clawker egress log` render them as is.
type Decision struct {
	overseer.Subject
	Stage  string
	PeerIP string
	Host   string
	Port   uint16
	Method string
	Path   string
	Rule   string
	Reason string
	At     time.Time
}

// OccurredAt implements overseer.Event.
func (d Decision) OccurredAt() time.Time { return d.At }

// MarshalZerologObject logs the decision.
func (d Decision) MarshalZerologObject(z *zerolog.Event) {
	d.Subject.MarshalZerologObject(z)
	z.Str("stage", d.Stage).Str("peer", d.PeerIP).Str("host", d.Host).Uint16("port", d.Port).
		Str("method", d.Method).Str("path", d.Path).Str("rule", d.Rule).Str("reason", d.Reason)
}

// EgressAllowed is one connection, query or request the gateway let
// through, attributed to a proven agent. A defined type over Decision
// rather than an embedding, so `clawker events` renders its fields flat.
type EgressAllowed Decision

// EventName implements overseer.Event.
func (EgressAllowed) EventName() string { return string(gateway.EgressAllowed) }

// OccurredAt implements overseer.Event.
func (e EgressAllowed) OccurredAt() time.Time { return e.At }

// MarshalZerologObject logs the decision.
func (e EgressAllowed) MarshalZerologObject(z *zerolog.Event) { Decision(e).MarshalZerologObject(z) }

// EgressDenied is one the gateway refused (including unattributed peers).
type EgressDenied Decision

// EventName implements overseer.Event.
func (EgressDenied) EventName() string { return string(gateway.EgressDenied) }

// OccurredAt implements overseer.Event.
func (e EgressDenied) OccurredAt() time.Time { return e.At }

// MarshalZerologObject logs the decision.
func (e EgressDenied) MarshalZerologObject(z *zerolog.Event) { Decision(e).MarshalZerologObject(z) }

// EgressGranted audits a timed bypass; EgressGrantExpired its end.
type EgressGranted struct {
	overseer.Subject
	GrantID uint64
	Host    string
	Port    uint16
	Expires time.Time
	By      string
	Reason  string
	At      time.Time
}

// EventName implements overseer.Event.
func (EgressGranted) EventName() string { return "egress_granted" }

// OccurredAt implements overseer.Event.
func (e EgressGranted) OccurredAt() time.Time { return e.At }

// EgressGrantExpired is published when a grant's time is up.
type EgressGrantExpired struct {
	overseer.Subject
	GrantID uint64
	Host    string
	Port    uint16
	At      time.Time
}

// EventName implements overseer.Event.
func (EgressGrantExpired) EventName() string { return "egress_grant_expired" }

// OccurredAt implements overseer.Event.
func (e EgressGrantExpired) OccurredAt() time.Time { return e.At }

// EgressPolicyLoaded audits a policy change of one project.
type EgressPolicyLoaded struct {
	Project  string
	Allow    int
	Deny     int
	Defaults bool
	By       string
	At       time.Time
}

// EventName implements overseer.Event.
func (EgressPolicyLoaded) EventName() string { return "egress_policy_loaded" }

// OccurredAt implements overseer.Event.
func (e EgressPolicyLoaded) OccurredAt() time.Time { return e.At }

// Publisher is the slice of the bus the component uses.
type Publisher interface {
	Publish(e overseer.Event)
}

// busSink turns gateway decisions into bus events.
type busSink struct{ bus Publisher }

func (s busSink) Emit(_ context.Context, ev gateway.Event) {
	d := Decision{
		Subject: overseer.Subject{ContainerID: ev.Agent.ContainerID, AgentName: agentShort(ev.Agent), Project: ev.Agent.Project},
		Stage:   ev.Stage, Host: ev.Host, Port: ev.Port, Method: ev.Method, Path: ev.Path,
		Rule: ev.Rule, Reason: ev.Reason, At: ev.Time,
	}
	if ev.PeerIP.IsValid() {
		d.PeerIP = ev.PeerIP.String()
	}
	if ev.Kind == gateway.EgressAllowed {
		s.bus.Publish(EgressAllowed(d))
		return
	}
	s.bus.Publish(EgressDenied(d))
}
