package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"

	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// agents joins the CP's rows with Docker's container states from the
// agents' labels: running ones by default, every one with -a (plus agent
// containers the CP has no row for), IDs with -q, a template with --format.
func TestAgentsAllQuietFormat(t *testing.T) {
	home := initHome(t)
	web, _ := auth.NewProjectSlug("web")
	row := func(name string, c *fakeCtr) agent.Entry {
		an, _ := auth.NewAgentName(name)
		return agent.Entry{AgentName: an, Project: web, ContainerID: c.id, Thumbprint: [32]byte{name[0]}, RegisteredAt: time.Now(), LastSeen: time.Now()}
	}
	up := agentCtr("a1", "web", "up", container.StateRunning)
	down := agentCtr("b2", "web", "down", container.StateExited)
	stray := agentCtr("c3", "web", "stray", container.StateCreated) // never registered
	other := agentCtr("d4", "api", "else", container.StateRunning)  // another project
	t.Setenv(EnvCPAdminAddr, serveAdmin(t, home, []agent.Entry{row("up", up), row("down", down)}))
	h := &harness{home: home, docker: &fakeDocker{containers: []*fakeCtr{up, down, stray, other}}}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"agents", "-q"}, up.id[:12] + "\n"},
		{[]string{"agents", "-a", "-q", "-p", "web"}, down.id[:12] + "\n" + up.id[:12] + "\n" + stray.id[:12] + "\n"}, // the CP's order, then Docker's strays
		{[]string{"agents", "-a", "-p", "web", "--format", "{{.Agent}} {{.State}} {{.Registered}}"}, "down exited true\nup running true\nstray created false\n"},
	} {
		out, stderr, code := h.run(t, tc.args...)
		if code != 0 || out != tc.want {
			t.Errorf("%v: exit %d stderr %q\n got %q\nwant %q", tc.args, code, stderr, out, tc.want)
		}
	}
	out, _, code := h.run(t, "agents")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[1], "up ") || !strings.HasSuffix(lines[1], "running") {
		t.Fatalf("agents (running only):\n%s", out)
	}
	out, _, _ = h.run(t, "agents", "-a", "-o", "json")
	var rows []agentJSON
	err := json.Unmarshal([]byte(out), &rows)
	states := map[string]string{}
	for _, r := range rows {
		states[r.Project+"/"+r.Agent] = r.State
	}
	if err != nil || len(rows) != 4 || states["web/down"] != "exited" || states["api/else"] != "running" {
		t.Fatalf("agents -a -o json: %v\n%s", err, out)
	}
	out, _, _ = h.run(t, "agents", "--format", "{{json .}}")
	if !strings.HasPrefix(out, `{"agent":"up"`) || strings.Count(out, "\n") != 1 {
		t.Fatalf("--format json: %q", out)
	}
	for _, bad := range [][]string{{"agents", "--format", "{{.Nope"}, {"agents", "--format", "{{.Agent}}", "-o", "json"}} {
		if _, stderr, code := h.run(t, bad...); code != ExitUsage {
			t.Errorf("%v: exit %d %q", bad, code, stderr)
		}
	}
}

func TestStateLsQuietFormat(t *testing.T) {
	vol := func(project, agent, path string) map[string]string {
		return map[string]string{consts.LabelPurpose: purposeState, consts.LabelProject: project, consts.LabelAgent: agent, labelStatePath: path}
	}
	f := &fakeDocker{volumes: map[string]map[string]string{"v1": vol("web", "dev", "~/.claude")}}
	h := &harness{home: initHome(t), docker: f}
	if out, _, code := h.run(t, "state", "ls", "-q"); code != 0 || out != "v1\n" {
		t.Errorf("state ls -q: %d %q", code, out)
	}
	if out, _, code := h.run(t, "state", "ls", "--format", "{{.Agent}}:{{.Path}}"); code != 0 || out != "dev:~/.claude\n" {
		t.Errorf("state ls --format: %d %q", code, out)
	}
}

func TestEventsFormat(t *testing.T) {
	home := initHome(t)
	bus := overseer.New(logger.Nop())
	id := strings.Repeat("ef", 32)
	bus.Publish(agent.AgentUntrusted{Subject: overseer.Subject{ContainerID: id, AgentName: "dev", Project: "web"},
		Reason: overseer.ReasonChainInvalid, At: time.Now()})
	t.Setenv(EnvCPAdminAddr, serveAdminDeps(t, home, admin.Deps{Bus: bus}))
	h := &harness{home: home}
	want := "agent_untrusted web/dev " + string(overseer.ReasonChainInvalid) + "\n"
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, stderr, code := h.run(t, "events", "--format", `{{.Name}} {{.Project}}/{{.Agent}} {{index .Fields "Reason"}}`)
		if code == 0 && out == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events --format: %d %q %q, want %q", code, out, stderr, want)
		}
		time.Sleep(20 * time.Millisecond) // the bus applies events asynchronously
	}
}
