package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestCPUnavailableNeverContainsHonestAgent runs the CP with
// --untrusted-policy kill and an honest agent (cert and labels agree) whose
// token endpoint is unreachable: from where the agent stands, the CP's
// token endpoint is down. Its Register fails, so it is untrusted with
// register_cp_unavailable, and the policy must not kill it. A forged agent
// next to it is the control: the same policy kills it, so the honest
// agent's survival is the advisory reason's doing, not an idle policy.
func TestCPUnavailableNeverContainsHonestAgent(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s", "--untrusted-policy", "kill")

	// Port 1 on the CP: nothing listens, the exchange is refused at once.
	honest := createAgentContainer(t, e.home, handMadeAgent{name: "clawker-e2e-cpdown", project: "e2e",
		labelAgent: "carol", certAgent: "carol", tokenPort: 1})
	forged := createForgedAgent(t, e.home, "e2e", "mallory", "alice")

	eventually(t, 90*time.Second, "honest agent untrusted with register_cp_unavailable", func() error {
		reasons := untrustedReasonsOf(e, honest)
		for _, r := range reasons {
			if r == "register_cp_unavailable" {
				return nil
			}
		}
		return fmt.Errorf("untrusted reasons %v", reasons)
	})
	eventually(t, 60*time.Second, "policy killed the forged control", func() error {
		if s := inspect(t, forged).State; s.Running {
			return fmt.Errorf("forged state %s", s.Status)
		}
		return nil
	})
	// The skip line is the policy having handled the honest agent's
	// outcome: after it, nothing else on the event path can act on it.
	eventually(t, 30*time.Second, "policy skipped the honest agent", func() error {
		r := e.must("cp", "logs")
		logs := r.stdout + r.stderr
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, "untrusted_policy_skipped") && strings.Contains(l, honest) &&
				strings.Contains(l, "register_cp_unavailable") {
				return nil
			}
		}
		return fmt.Errorf("no untrusted_policy_skipped for the honest agent:\n%s", lastLines(logs, 40))
	})
	if s := inspect(t, honest).State; !s.Running || s.Paused {
		t.Fatalf("honest agent contained: state %s", s.Status)
	}
	r := e.must("cp", "logs")
	for _, l := range strings.Split(r.stdout+r.stderr, "\n") {
		if strings.Contains(l, honest) && (strings.Contains(l, "untrusted_policy_applied") ||
			strings.Contains(l, "untrusted_policy_reapplied")) {
			t.Fatalf("policy acted on the honest agent: %s", l)
		}
	}
	for _, row := range e.agents() {
		if row.ContainerID == honest && (row.Trusted || row.Registered) {
			t.Fatalf("honest agent with a failed Register shown trusted/registered: %+v", row)
		}
	}
}

// untrustedReasonsOf reads an agent's untrusted reasons from `agents -o json`.
func untrustedReasonsOf(e *env, id string) []string {
	e.t.Helper()
	var rows []struct {
		ContainerID      string   `json:"container_id"`
		UntrustedReasons []string `json:"untrusted_reasons"`
	}
	r := e.must("agents", "-a", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		e.t.Fatalf("agents -o json: %v\n%s", err, r)
	}
	for _, row := range rows {
		if row.ContainerID == id {
			return row.UntrustedReasons
		}
	}
	return nil
}
