package daemon

import (
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc/codes"

	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
)

// metrics holds the CP's Prometheus collectors. Counters and histograms are
// fed by a bus subscriber (so no subsystem imports Prometheus); gauges are
// read from the worldview and the feeder at scrape time.
type metrics struct {
	reg *prometheus.Registry

	dialAttempts  prometheus.Counter
	dialFailures  *prometheus.CounterVec
	sessionBreaks *prometheus.CounterVec
	registrations *prometheus.CounterVec
	untrusted     *prometheus.CounterVec
	initSteps     *prometheus.HistogramVec
	initRuns      *prometheus.CounterVec
}

// busStats is what the scrape-time gauges read.
type busStats interface {
	Snapshot() *overseer.State
	Drops() map[string]uint64
}

// newMetrics builds the collectors. It fails (rather than panics) if a
// collector cannot be registered.
func newMetrics(bus busStats, reconnects func() float64) (*metrics, error) {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.dialAttempts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "clawker_cp_dial_attempts_total", Help: "Session dial cycles started (SessionConnecting events).",
	})
	m.dialFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "clawker_cp_dial_failures_total", Help: "Session dial cycles that failed, by reason.",
	}, []string{"reason"})
	m.sessionBreaks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "clawker_cp_session_breaks_total", Help: "Established Sessions that broke, by reason.",
	}, []string{"reason"})
	m.registrations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "clawker_cp_registrations_total", Help: "Register handshakes by outcome (ok, failed) and failure reason.",
	}, []string{"outcome", "reason"})
	m.untrusted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "clawker_cp_untrusted_total", Help: "AgentUntrusted outcomes (registration rejections and identity violations), by reason.",
	}, []string{"reason"})
	m.initSteps = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "clawker_cp_init_step_duration_seconds", Help: "Init step durations, by step and outcome.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10),
	}, []string{"step", "outcome"})
	m.initRuns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "clawker_cp_init_runs_total", Help: "Init plan runs by outcome (completed, failed).",
	}, []string{"outcome"})
	sessions := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "clawker_cp_sessions", Help: "Agents by Session state in the worldview.",
	}, []string{"state"})
	for _, c := range []prometheus.Collector{m.dialAttempts, m.dialFailures, m.sessionBreaks, m.registrations, m.untrusted, m.initSteps, m.initRuns,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&scrapeCollector{bus: bus, sessions: sessions, reconnects: reconnects,
			drops: prometheus.NewDesc("clawker_cp_bus_dropped_events_total", "Event deliveries dropped by the bus, by subscriber.", []string{"subscriber"}, nil),
			recon: prometheus.NewDesc("clawker_cp_docker_event_reconnects_total", "Docker event stream reconnects.", nil, nil),
		}} {
		if err := m.reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics collector: %w", err)
		}
	}
	return m, nil
}

// observe folds one bus event into the counters.
func (m *metrics) observe(e overseer.Event) {
	switch ev := e.(type) {
	case agent.SessionConnecting:
		m.dialAttempts.Inc()
	case agent.SessionFailed:
		m.dialFailures.WithLabelValues(dialFailureLabel(ev.Reason)).Inc()
	case agent.SessionBroken:
		m.sessionBreaks.WithLabelValues(sessionBreakLabel(ev.Reason)).Inc()
	case agent.AgentRegistered:
		if ev.Ok {
			m.registrations.WithLabelValues("ok", "").Inc()
		} else {
			m.registrations.WithLabelValues("failed", registerFailureLabel(ev.Reason)).Inc()
		}
	case agent.AgentUntrusted:
		m.untrusted.WithLabelValues(untrustedLabel(ev.Reason)).Inc()
	case agent.InitStepCompleted:
		m.initSteps.WithLabelValues(ev.StepName, "ok").Observe(ev.Duration.Seconds())
	case agent.InitStepFailed:
		m.initSteps.WithLabelValues(ev.StepName, string(ev.Reason)).Observe(ev.Duration.Seconds())
	case agent.InitCompleted:
		m.initRuns.WithLabelValues("completed").Inc()
	case agent.InitFailed:
		m.initRuns.WithLabelValues("failed").Inc()
	}
}

// scrapeCollector reads gauges at scrape time from the bus and feeder.
type scrapeCollector struct {
	bus        busStats
	sessions   *prometheus.GaugeVec
	reconnects func() float64
	drops      *prometheus.Desc
	recon      *prometheus.Desc
}

func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	c.sessions.Describe(ch)
	ch <- c.drops
	ch <- c.recon
}

func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	c.sessions.Reset()
	for _, s := range []overseer.SessionStatus{overseer.SessionStatusNone, overseer.SessionStatusConnecting, overseer.SessionStatusConnected,
		overseer.SessionStatusFailed, overseer.SessionStatusBroken, overseer.SessionStatusClosed} {
		c.sessions.WithLabelValues(string(s)).Set(0)
	}
	if st := c.bus.Snapshot(); st != nil {
		for _, a := range st.Agents {
			c.sessions.WithLabelValues(string(a.Session)).Inc()
		}
	}
	c.sessions.Collect(ch)
	for sub, n := range c.bus.Drops() {
		ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(n), sub)
	}
	var r float64
	if c.reconnects != nil {
		r = c.reconnects()
	}
	ch <- prometheus.MustNewConstMetric(c.recon, prometheus.CounterValue, r)
}

// Metric label values come only from the fixed vocabularies below, never
// from event free text: a SessionBroken reason carries addresses and
// ports, and an AgentRegistered reason is partly written by the agent, so
// passing either through would let label cardinality grow without bound
// (and let an agent choose label values). Anything unrecognised is
// labelOther; the full text stays in the structured log.
const labelOther = "other"

func dialFailureLabel(r string) string {
	switch r {
	case agent.FailConnectTimeout, agent.FailContainerNotRunning, agent.FailContainerGone, agent.FailFDLeakCeiling:
		return r
	}
	return labelOther
}

// grpcCodeLabels maps a gRPC code's name (as SessionBroken prints it) to
// its label.
var grpcCodeLabels = func() map[string]string {
	m := map[string]string{}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		m[c.String()] = strings.ToLower(c.String())
	}
	return m
}()

// sessionBreakLabel: "peer_closed", a lowercase gRPC code name, or other.
func sessionBreakLabel(r string) string {
	if r == "peer closed" {
		return "peer_closed"
	}
	code, _, ok := strings.Cut(r, ":")
	if !ok {
		return labelOther
	}
	if l, ok := grpcCodeLabels[code]; ok {
		return l
	}
	return labelOther
}

// registerFailureLabel separates the CP's own double-check failing
// ("cp_check_failed") and a Register exchange that produced no reply
// ("no_reply": the Session broke or timed out) from a failure the agent
// reported ("agent_reported"). The typed reason is on the AgentUntrusted
// counter.
func registerFailureLabel(r string) string {
	switch {
	case strings.HasPrefix(r, "register reported ok but"):
		return "cp_check_failed"
	case strings.HasPrefix(r, "no RegisterDone within"), strings.HasPrefix(r, "send RegisterRequired:"),
		strings.HasPrefix(r, "await RegisterDone:"):
		return "no_reply"
	}
	return "agent_reported"
}

func untrustedLabel(r overseer.UntrustedReason) string {
	switch r {
	case overseer.ReasonThumbprintMismatch, overseer.ReasonCNMismatch, overseer.ReasonPeerIPMismatch,
		overseer.ReasonChainInvalid, overseer.ReasonIdentityMismatch, overseer.ReasonRegisterFailed,
		overseer.ReasonRegistryError, overseer.ReasonRegistryRowLost, overseer.ReasonContainerMismatch,
		overseer.ReasonRegisterTransport, overseer.ReasonRegisterTimeout, overseer.ReasonRegisterCPUnavailable,
		overseer.ReasonRegisterAssertionSpent:
		return string(r)
	}
	return labelOther
}
