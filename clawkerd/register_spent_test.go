package clawkerd

import (
	"strings"
	"testing"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// TestRegisterSpentAssertionMarked: the exchange spent the assertion, the
// Register call then failed CP-side, and clawkerd lost its token (here: a
// restart). The next RegisterRequired cannot succeed; its RegisterDone
// says why with the stable marker the CP maps to the advisory
// register_assertion_spent, not a bare "read assertion" (register_failed).
func TestRegisterSpentAssertionMarked(t *testing.T) {
	var cp *fakeCP
	pki := newTestPKI(t)
	path := t.TempDir() + "/assertion.jwt"
	ts := startServerPKI(t, pki, func(c *Config) {
		c.AssertionPath = path
		must(t, writeFile(c.AssertionPath, "file.jwt\n"))
		cp = startFakeCP(t, pki, "file.jwt")
		c.CPTokenURL, c.CPAgentAddr = cp.tokenURL, cp.agentAddr
	})
	cp.failNext.Store(true)
	if d := registerRequired(ts.session(t), "r1"); d.GetOk() {
		t.Fatalf("first attempt should fail: %v", d)
	}
	restarted := startServerPKI(t, pki, func(c *Config) {
		c.AssertionPath = path
		c.CPTokenURL, c.CPAgentAddr = cp.tokenURL, cp.agentAddr
	})
	d := registerRequired(restarted.session(t), "r2")
	if d.GetOk() || !strings.HasPrefix(d.GetError(), clawkerdv1.RegisterAssertionSpent) {
		t.Fatalf("RegisterDone %v, want an error starting with %q", d, clawkerdv1.RegisterAssertionSpent)
	}
	if cp.exchanges.Load() != 1 {
		t.Fatalf("%d exchanges", cp.exchanges.Load())
	}
}
