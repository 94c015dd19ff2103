package daemon

import (
	"github.com/prometheus/client_golang/prometheus"
)

// dosCollector exposes dosState at scrape time.
type dosCollector struct {
	s                                   *dosState
	refused, dockerCalls, replays, rate *prometheus.Desc
}

func newDoSCollector(s *dosState) *dosCollector {
	return &dosCollector{s: s,
		refused: prometheus.NewDesc("clawker_cp_conn_refused_total",
			"Connections refused at accept, before TLS, by listener and reason (per_peer_cap, peer_not_allowed).", []string{"listener", "reason"}, nil),
		dockerCalls: prometheus.NewDesc("clawker_cp_peer_lookup_docker_calls_total",
			"Docker API calls made by the peer lookup (token endpoint, identity gate, event indexing), by call.", []string{"call"}, nil),
		replays: prometheus.NewDesc("clawker_cp_token_replays_prechecked_total",
			"Replayed assertions refused by the read-only jti check, before any signature check or Docker call.", nil, nil),
		rate: prometheus.NewDesc("clawker_cp_token_refusals_rate_limited_total",
			"Token requests refused up front because their peer spent its refusal budget.", nil, nil),
	}
}

func (c *dosCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.refused
	ch <- c.dockerCalls
	ch <- c.replays
	ch <- c.rate
}

func (c *dosCollector) Collect(ch chan<- prometheus.Metric) {
	c.s.mu.Lock()
	for k, n := range c.s.refused {
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(n), k[0], k[1])
	}
	c.s.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(c.dockerCalls, prometheus.CounterValue, float64(c.s.dockerInspects.Load()), "inspect")
	ch <- prometheus.MustNewConstMetric(c.dockerCalls, prometheus.CounterValue, float64(c.s.dockerLists.Load()), "list")
	var st struct{ replays, rate uint64 }
	if iss := c.s.issuer.Load(); iss != nil {
		s := iss.Stats()
		st.replays, st.rate = s.ReplaysPrechecked, s.RateLimited
	}
	ch <- prometheus.MustNewConstMetric(c.replays, prometheus.CounterValue, float64(st.replays))
	ch <- prometheus.MustNewConstMetric(c.rate, prometheus.CounterValue, float64(st.rate))
}
