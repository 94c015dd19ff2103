package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/consts"
)

// TestOperatorSurface covers issue 6's Must show on the real engine:
// events -f shows SessionConnected → AgentRegistered → InitCompleted for a
// new agent; exec returns output and exit code; /healthz and /metrics are
// scraped; each containment action is observed on the engine.
func TestOperatorSurface(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")

	// events -f, started before the agent exists.
	ev := e.start("events", "-f", "--since", "0", "--project", "ops", "-o", "json")
	id := strings.TrimSpace(e.must("run", "-d", "--project", "ops", "--agent", "worker", agentImage, "sleep", "3600").stdout)

	want := []string{"session_connected", "agent_registered", "init_completed"}
	eventually(t, 90*time.Second, "events -f shows "+strings.Join(want, " → "), func() error {
		names := ev.eventNames(id)
		if !subsequence(names, want) {
			return fmt.Errorf("events so far: %v", names)
		}
		return nil
	})
	ev.stop()

	// exec: stdout and stderr apart, as docker exec's, and the exit code
	// passes through.
	r := e.clawker("exec", "--project", "ops", "worker", "--", "sh", "-c", "echo out-$((6*7)); echo err >&2; exit 3")
	if r.code != 3 || r.stdout != "out-42\n" || r.stderr != "err\n" {
		t.Fatalf("exec: want exit 3, out-42 on stdout and err on stderr, got %s", r)
	}
	r = e.clawker("exec", "-i", "--project", "ops", "worker", "--", "cat")
	if r.code != 0 {
		t.Fatalf("exec -i cat: %s", r)
	}
	if r := e.clawker("exec", "--project", "ops", "nobody", "--", "true"); r.code != 4 {
		t.Fatalf("exec in an unknown agent: want exit 4, got %s", r)
	}

	// run, attached: init progress on stderr, the console on stdout, the
	// user command's exit code passed through.
	r = e.clawker("run", "--project", "ops", "--agent", "once", agentImage, "sh", "-c", "echo attached-out; exit 7")
	if r.code != 7 || !strings.Contains(r.stdout, "attached-out") || !strings.Contains(r.stderr, "agent ready") ||
		!strings.Contains(r.stderr, "registered") || strings.Contains(r.stderr, `"component":"clawkerd"`) {
		t.Fatalf("attached run: want exit 7, console output, progress and no clawkerd log lines; got %s", r)
	}

	// /healthz and /metrics.
	status := e.must("cp", "status", "-o", "json")
	var st struct {
		HealthAddr string `json:"health_addr"`
		NetState   string `json:"net_state"`
	}
	if err := json.Unmarshal([]byte(status.stdout), &st); err != nil || st.HealthAddr == "" || st.NetState != "running" {
		t.Fatalf("cp status -o json: %v %s", err, status)
	}
	hz := httpGet(t, "http://"+st.HealthAddr+"/healthz")
	if !strings.Contains(hz, `"ready":true`) || !strings.Contains(hz, `"agent_api":"ok"`) {
		t.Errorf("/healthz: %s", hz)
	}
	metrics := httpGet(t, "http://"+st.HealthAddr+"/metrics")
	for _, m := range []string{`clawker_cp_registrations_total{outcome="ok",reason=""} 2`, `clawker_cp_sessions{state="connected"} 1`,
		"clawker_cp_init_step_duration_seconds_bucket", "clawker_cp_dial_attempts_total"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}

	// Containment, each observed on the engine.
	e.must("contain", "--project", "ops", "worker", "--action", "network-detach", "--reason", "e2e")
	eventually(t, 30*time.Second, "detached from its agent network", func() error {
		c := inspect(t, id)
		if n := agentnet.NameOf("ops", "worker"); c.NetworkSettings.Networks[n] != nil || len(c.NetworkSettings.Networks) != 0 {
			return fmt.Errorf("still on %v", c.NetworkSettings.Networks)
		}
		return nil
	})
	e.must("contain", "--project", "ops", "worker", "--action", "pause", "--reason", "e2e")
	eventually(t, 30*time.Second, "paused", func() error {
		if s := inspect(t, id).State; !s.Paused {
			return fmt.Errorf("state %s", s.Status)
		}
		return nil
	})
	if _, err := suite.docker.ContainerUnpause(context.Background(), id, mobyclient.ContainerUnpauseOptions{}); err != nil {
		t.Fatal(err)
	}
	e.must("contain", "--project", "ops", "worker", "--action", "kill", "--reason", "e2e")
	eventually(t, 30*time.Second, "killed", func() error {
		if s := inspect(t, id).State; s.Running {
			return fmt.Errorf("state %s", s.Status)
		}
		return nil
	})
	if r := e.clawker("contain", "--project", "ops", "worker", "--action", "explode"); r.code != 2 {
		t.Errorf("bad action: want exit 2, got %s", r)
	}
}

func inspect(t *testing.T, id string) mobyInspect {
	t.Helper()
	res, err := suite.docker.ContainerInspect(context.Background(), id, mobyclient.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return mobyInspect{NetworkSettings: res.Container.NetworkSettings, State: res.Container.State}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// subsequence reports whether want appears in names in order.
func subsequence(names, want []string) bool {
	i := 0
	for _, n := range names {
		if i < len(want) && n == want[i] {
			i++
		}
	}
	return i == len(want)
}

// bg is a long-running CLI subprocess (events -f).
type bg struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	mu     sync.Mutex
	lines  []string
	done   chan struct{}
}

func (e *env) start(args ...string) *bg {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, filepath.Join(suite.binDir, "clawker"), args...)
	cmd.Env = append(os.Environ(), consts.EnvHome+"="+e.home, "CLAWKER_LABELS="+testLabel)
	out, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	b := &bg{cmd: cmd, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			b.mu.Lock()
			b.lines = append(b.lines, sc.Text())
			b.mu.Unlock()
		}
	}()
	e.t.Cleanup(b.stop)
	return b
}

func (b *bg) stop() {
	b.cancel()
	<-b.done
	_ = b.cmd.Wait()
}

// eventNames returns the names of the JSON events seen for container id.
func (b *bg) eventNames(id string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var names []string
	for _, l := range b.lines {
		var ev struct {
			Name        string `json:"name"`
			ContainerID string `json:"container_id"`
		}
		if json.Unmarshal([]byte(l), &ev) == nil && ev.ContainerID == id {
			names = append(names, ev.Name)
		}
	}
	return names
}
