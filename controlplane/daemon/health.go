package daemon

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"sync"
)

// Subsystem status values. Anything else is a degradation reason.
const (
	statusOK       = "ok"
	statusStarting = "starting"
	statusDisabled = "disabled"
)

// health tracks every subsystem's status. Static statuses are set by the
// startup sequence; probes are evaluated on every read (e.g. whether the
// Docker events stream is connected right now).
type health struct {
	mu      sync.Mutex
	status  map[string]string
	probes  map[string]func() string
	started bool
	version string
}

func newHealth(version string, names ...string) *health {
	h := &health{status: map[string]string{}, probes: map[string]func() string{}, version: version}
	for _, n := range names {
		h.status[n] = statusStarting
	}
	return h
}

func (h *health) set(name, status string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.status[name] = status
}

func (h *health) probe(name string, fn func() string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.probes[name] = fn
}

// markStarted ends the startup phase: from now on readiness is the
// conjunction of subsystem statuses.
func (h *health) markStarted() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.started = true
}

// report returns readiness and a copy of every status.
func (h *health) report() (bool, map[string]string) {
	h.mu.Lock()
	out := make(map[string]string, len(h.status)+len(h.probes))
	for k, v := range h.status {
		out[k] = v
	}
	probes := make(map[string]func() string, len(h.probes))
	for k, v := range h.probes {
		probes[k] = v
	}
	started := h.started
	h.mu.Unlock()
	for k, fn := range probes {
		out[k] = safeProbe(fn)
	}
	ready := started
	for _, v := range out {
		if v != statusOK && v != statusDisabled {
			ready = false
		}
	}
	return ready, out
}

func safeProbe(fn func() string) (s string) {
	defer func() {
		if r := recover(); r != nil {
			s = "probe panicked"
		}
	}()
	return fn()
}

// degraded lists the subsystems not ok, for log lines.
func degraded(m map[string]string) string {
	var bad []string
	for k, v := range m {
		if v != statusOK && v != statusDisabled {
			bad = append(bad, k+"="+v)
		}
	}
	sort.Strings(bad)
	return strings.Join(bad, ", ")
}

// ServeHTTP serves /healthz: 503 until ready, then 200; the body is the
// per-subsystem status as JSON either way.
func (h *health) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	ready, subs := h.report()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(struct {
		Ready      bool              `json:"ready"`
		Subsystems map[string]string `json:"subsystems"`
		Version    string            `json:"version,omitempty"`
	}{ready, subs, h.version})
}

// onlyConnecting reports whether every non-ok subsystem is merely still
// connecting.
func onlyConnecting(m map[string]string) bool {
	for _, v := range m {
		if v != statusOK && v != statusDisabled && v != "connecting" {
			return false
		}
	}
	return true
}
