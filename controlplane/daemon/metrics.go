package daemon

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

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

func newMetrics(bus busStats, reconnects func() float64) *metrics {
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
	m.reg.MustRegister(m.dialAttempts, m.dialFailures, m.sessionBreaks, m.registrations, m.untrusted, m.initSteps, m.initRuns,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&scrapeCollector{bus: bus, sessions: sessions, reconnects: reconnects,
			drops: prometheus.NewDesc("clawker_cp_bus_dropped_events_total", "Event deliveries dropped by the bus, by subscriber.", []string{"subscriber"}, nil),
			recon: prometheus.NewDesc("clawker_cp_docker_event_reconnects_total", "Docker event stream reconnects.", nil, nil),
		})
	return m
}

// observe folds one bus event into the counters.
func (m *metrics) observe(e overseer.Event) {
	switch ev := e.(type) {
	case agent.SessionConnecting:
		m.dialAttempts.Inc()
	case agent.SessionFailed:
		m.dialFailures.WithLabelValues(ev.Reason).Inc()
	case agent.SessionBroken:
		m.sessionBreaks.WithLabelValues(ev.Reason).Inc()
	case agent.AgentRegistered:
		if ev.Ok {
			m.registrations.WithLabelValues("ok", "").Inc()
		} else {
			m.registrations.WithLabelValues("failed", reasonLabel(ev.Reason)).Inc()
		}
	case agent.AgentUntrusted:
		m.untrusted.WithLabelValues(string(ev.Reason)).Inc()
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
	for _, s := range []overseer.SessionStatus{overseer.SessionNone, overseer.SessionConnecting, overseer.SessionConnected,
		overseer.SessionFailed, overseer.SessionBroken, overseer.SessionClosed} {
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

// reasonLabel bounds a free-text reason to a short label value so a
// verbose error cannot explode metric cardinality.
func reasonLabel(r string) string {
	if i := strings.IndexAny(r, ":\n"); i >= 0 {
		r = r[:i]
	}
	if len(r) > 48 {
		r = r[:48]
	}
	return r
}
