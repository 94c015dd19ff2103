package gateway

import (
	"context"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/clawker/clawker/internal/egress/policy"
)

// EventKind names a decision event.
type EventKind string

// The two decision events; names follow the CP bus's snake_case kinds.
const (
	EgressAllowed EventKind = "egress_allowed"
	EgressDenied  EventKind = "egress_denied"
)

// Stages at which a decision is made.
const (
	StageDNS     = "dns"
	StageHTTP    = "http"    // plain HTTP request
	StageConnect = "connect" // CONNECT host:port
	StageSNI     = "sni"     // TLS ClientHello inside a tunnel
	StageTLS     = "tls"     // request inside an intercepted tunnel
	StageDial    = "dial"    // an address a name resolved to
)

// Event is one decision, attributed. Method and Path are set where the
// gateway saw them (plain HTTP and intercepted TLS).
type Event struct {
	Kind      EventKind
	Time      time.Time
	Stage     string
	PeerIP    netip.Addr
	Agent     Agent
	Host      string
	Port      uint16
	Method    string
	Path      string
	Rule      string // RuleRef.String()
	RuleList  string
	RuleIndex int
	Reason    string
}

// Sink receives decision events (the CP publishes them on its bus). Emit
// must not block the serving path.
type Sink interface {
	Emit(ctx context.Context, ev Event)
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(ctx context.Context, ev Event)

// Emit implements Sink.
func (f SinkFunc) Emit(ctx context.Context, ev Event) { f(ctx, ev) }

// NewDecisionCounter returns the counter Config.Decisions expects:
// clawker_cp_egress_decisions_total{stage,decision,rule}. Rule names
// come from the policy file, so the label set stays bounded.
func NewDecisionCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "clawker_cp_egress_decisions_total",
		Help: "Egress gateway decisions by stage, outcome and matched rule.",
	}, []string{"stage", "decision", "rule"})
}

func (g *Gateway) record(ctx context.Context, stage string, c caller, req policy.Request, d policy.Decision) {
	kind, outcome := EgressAllowed, "allowed"
	if !d.Allowed {
		kind, outcome = EgressDenied, "denied"
	}
	rule := d.Rule.String()
	if g.cfg.Decisions != nil {
		g.cfg.Decisions.WithLabelValues(stage, outcome, rule).Inc()
	}
	if g.cfg.Sink != nil {
		g.cfg.Sink.Emit(ctx, Event{
			Kind: kind, Time: time.Now(), Stage: stage, PeerIP: c.peer, Agent: c.agent,
			Host: policy.NormalizeHost(req.Host), Port: req.Port, Method: req.Method, Path: req.Path,
			Rule: rule, RuleList: d.Rule.List, RuleIndex: d.Rule.Index, Reason: d.Reason,
		})
	}
	lvl := zerolog.DebugLevel
	if !d.Allowed {
		lvl = zerolog.InfoLevel
	}
	g.log.WithLevel(lvl).Str("event", string(kind)).Str("stage", stage).Str("peer", c.peer.String()).
		Str("agent", c.agent.Name).Str("project", c.agent.Project).Str("host", req.Host).
		Uint16("port", req.Port).Str("method", req.Method).Str("path", req.Path).
		Str("rule", rule).Str("reason", d.Reason).Msg("egress decision")
}
