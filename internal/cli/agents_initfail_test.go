package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/logger"
)

// An init step that timed out shows as such in `clawker agents` (init
// column and JSON) and in `clawker events`.
func TestAgentsAndEventsShowInitTimeout(t *testing.T) {
	home := initHome(t)
	bus := overseer.New(logger.Nop())
	id := strings.Repeat("cd", 32)
	now := time.Now()
	bus.Publish(agent.SessionConnecting{Subject: overseer.Subject{ContainerID: id, AgentName: "dev", Project: "web"}, At: now})
	bus.Publish(agent.InitStarted{Subject: overseer.Subject{ContainerID: id, AgentName: "dev", Project: "web"}, StepCount: 6, At: now})
	bus.Publish(agent.InitStepFailed{Subject: overseer.Subject{ContainerID: id, AgentName: "dev", Project: "web"}, StepName: agent.StepConfig,
		StepIndex: 1, ExitCode: -1, Reason: overseer.InitReasonTimeout, Detail: "no reply within 1m15s", At: now})
	bus.Publish(agent.InitFailed{Subject: overseer.Subject{ContainerID: id, AgentName: "dev", Project: "web"}, FailedStep: agent.StepConfig,
		Reason: overseer.InitReasonTimeout, Detail: "no reply within 1m15s", ExitCode: -1, At: now})
	t.Setenv(EnvCPAdminAddr, serveAdminDeps(t, home, admin.Deps{Bus: bus}))
	h := &harness{home: home}
	deadline := time.Now().Add(10 * time.Second)
	var out string
	for { // the bus applies events asynchronously
		o, stderr, code := h.run(t, "agents")
		if code != 0 {
			t.Fatalf("agents: %d %s", code, stderr)
		}
		if out = o; strings.Contains(out, "failed: config (timeout)") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agents table lacks the init timeout:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, _, code := h.run(t, "agents", "-o", "json")
	if code != 0 || !strings.Contains(out, `"init_failure_reason": "timeout"`) || !strings.Contains(out, "no reply within") {
		t.Fatalf("json:\n%s", out)
	}
	out, stderr, code := h.run(t, "events")
	if code != 0 || !strings.Contains(out, "init_step_failed") || !strings.Contains(out, "init_failed") ||
		!strings.Contains(out, "timeout") {
		t.Fatalf("events: %d %s\n%s", code, stderr, out)
	}
}
