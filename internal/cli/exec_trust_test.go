package cli

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/logger"
)

// recExec records the env of every exec the admin server lets through.
type recExec struct {
	mu   sync.Mutex
	envs []map[string]string
}

func (r *recExec) Exec(_ context.Context, _ string, s *adminv1.ExecStart) (admin.ExecStream, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.envs = append(r.envs, s.GetEnv())
	return exitStream{}, nil
}

func (r *recExec) calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.envs)
}

type exitStream struct{}

func (exitStream) Recv() ([]byte, bool, int32, error) { return nil, false, 0, io.EOF }
func (exitStream) Resize(uint32, uint32) error        { return nil }
func (exitStream) Stdin([]byte) error                 { return nil }
func (exitStream) CloseStdin() error                  { return nil }
func (exitStream) Signal(int32) error                 { return nil }
func (exitStream) Close() error                       { return nil }

// serveAdminWith runs a real AdminService for cpHome's CP with a registry
// row for web/dev whose live Session found chain_invalid, and ex as the
// Session side.
func serveAdminWith(t *testing.T, cpHome, id string, ex admin.Execer) string {
	t.Helper()
	return serveAdminTrust(t, cpHome, id, ex, true)
}

// serveAdminTrust is serveAdminWith; untrusted false leaves web/dev trusted.
func serveAdminTrust(t *testing.T, cpHome, id string, ex admin.Execer, untrusted bool) string {
	t.Helper()
	an, _ := auth.NewAgentName("dev")
	ps, _ := auth.NewProjectSlug("web")
	reg := agent.NewRegistry(logger.Nop())
	if err := reg.Add(agent.Entry{AgentName: an, Project: ps, ContainerID: id, Thumbprint: [32]byte{1},
		RegisteredAt: time.Now(), LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	bus := overseer.New(nil)
	now := time.Now()
	bus.Publish(agent.SessionConnected{Subject: overseer.Subject{ContainerID: id, AgentName: "dev", Project: "web"}, Registered: true,
		PeerThumbprint: [32]byte{1}, Trusted: !untrusted, At: now})
	if untrusted {
		bus.Publish(agent.AgentUntrusted{Subject: overseer.Subject{ContainerID: id, AgentName: "dev", Project: "web"},
			Reason: overseer.ReasonChainInvalid, At: now})
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if a, ok := bus.Agent(id); ok && (len(a.UntrustedReasons) == 1) == untrusted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("worldview never took the untrusted agent")
		}
		time.Sleep(time.Millisecond)
	}
	return serveAdminDeps(t, cpHome, admin.Deps{Registry: reg, Bus: bus, Exec: ex})
}

// An untrusted agent: `clawker agents` says why in TRUSTED (table and
// JSON); `clawker exec -e SECRET` exits 126 naming the reason and the
// column, and the Session side never sees the command; --allow-untrusted
// warns on stderr and runs it.
func TestExecRefusedForUntrustedAgent(t *testing.T) {
	home := initHome(t)
	id := strings.Repeat("cd", 32)
	ex := &recExec{}
	t.Setenv(EnvCPAdminAddr, serveAdminWith(t, home, id, ex))
	h := &harness{home: home}

	out, stderr, code := h.run(t, "agents")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.Contains(lines[0], "REGISTERED  TRUSTED") ||
		!strings.Contains(lines[1], "no (chain_invalid)") {
		t.Fatalf("agents: %d %s\n%s", code, stderr, out)
	}
	out, _, _ = h.run(t, "agents", "-o", "json")
	var rows []agentJSON
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 1 || rows[0].Trust != "no (chain_invalid)" || rows[0].Trusted {
		t.Fatalf("agents -o json: %v\n%s", err, out)
	}

	_, stderr, code = h.run(t, "exec", "-p", "web", "dev", "-e", "SECRET=hunter2", "--", "./deploy.sh")
	if code != ExitUntrusted || !strings.Contains(stderr, "not trusted (chain_invalid)") ||
		!strings.Contains(stderr, "TRUSTED column of `clawker agents`") || !strings.Contains(stderr, "--allow-untrusted") {
		t.Fatalf("exec: exit %d stderr %q", code, stderr)
	}
	if ex.calls() != 0 {
		t.Fatalf("the command reached the Session side %d times", ex.calls())
	}

	_, stderr, code = h.run(t, "exec", "--allow-untrusted", "-p", "web", "dev", "-e", "SECRET=hunter2", "--", "./deploy.sh")
	if code != 0 || !strings.Contains(stderr, "warning: --allow-untrusted") {
		t.Fatalf("exec --allow-untrusted: exit %d stderr %q", code, stderr)
	}
	if ex.calls() != 1 || ex.envs[0]["SECRET"] != "hunter2" {
		t.Fatalf("forensic exec: %v", ex.envs)
	}
}
