package admin

import (
	"testing"
	"time"
)

// running reports whether a window holds the profiler's slot.
func (p *profiler) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.busy
}

// waitUntil polls cond until it holds, failing the test with what when d
// passes first.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
		time.Sleep(time.Millisecond)
	}
}
