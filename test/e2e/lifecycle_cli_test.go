package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// countExactLines counts the lines of s that are exactly marker.
func countExactLines(s, marker string) int {
	n := 0
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) == marker {
			n++
		}
	}
	return n
}

// TestLifecycleCLI is issue 16's stop / start / restart / logs, driven
// through clawker by name on the real engine: the engine state follows
// each command, the CP reports the Session closed on stop (not broken),
// a start or restart re-runs only pre-run and agent-ready (no second
// registration, post-init once), and logs shows the user command's
// console (stdout and stderr apart, without clawkerd's lines) across
// starts, with -f following a restart.
func TestLifecycleCLI(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	dir := projectDir(t, traceHooks)

	ev := e.start("events", "-f", "--since", "0", "--project", "clilife", "-o", "json")
	id := strings.TrimSpace(e.must("run", "-d", "--project", "clilife", "--name", "cyc", "--project-dir", dir,
		agentImage, "sh", "-c", "echo cmd-ran; echo err-ran >&2; exec sleep 3600").stdout)
	initDone := func(from int, what string) []evt {
		t.Helper()
		eventually(t, 90*time.Second, what, func() error {
			if indexOf(ev.events(id)[from:], "init_completed") < 0 {
				return fmt.Errorf("events: %v", names(ev.events(id)[from:]))
			}
			return nil
		})
		return ev.events(id)[from:]
	}
	initDone(0, "first start reaches init_completed")
	logsShow := func(n int) {
		t.Helper()
		eventually(t, 30*time.Second, fmt.Sprintf("logs show the user CMD %d times", n), func() error {
			r := e.clawker("logs", "-p", "clilife", "cyc")
			if r.code != 0 || countExactLines(r.stdout, "cmd-ran") != n || countExactLines(r.stderr, "err-ran") != n {
				return fmt.Errorf("logs: %s", r)
			}
			if strings.Contains(r.stdout+r.stderr, `"component":"clawkerd"`) || strings.Contains(r.stdout, "err-ran") {
				return fmt.Errorf("logs mixed clawkerd's lines or stderr into stdout: %s", r)
			}
			return nil
		})
	}
	logsShow(1)

	// rm of a running agent is refused and names clawker stop.
	if r := e.clawker("rm", "-p", "clilife", "cyc"); r.code != 1 || !strings.Contains(r.stderr, "clawker stop --project clilife cyc") {
		t.Fatalf("rm of a running agent: %s", r)
	}
	if !inspect(t, id).State.Running {
		t.Fatal("refused rm stopped the agent")
	}

	// stop: engine stopped, Session closed on purpose.
	if r := e.must("stop", "-p", "clilife", "-t", "5", "cyc"); r.stdout != "cyc\n" {
		t.Fatalf("stop printed %q", r.stdout)
	}
	if s := inspect(t, id).State; s.Running || s.Status != "exited" {
		t.Fatalf("after clawker stop: %s", s.Status)
	}
	eventually(t, 30*time.Second, "session_closed after stop", func() error {
		if indexOf(ev.events(id), "session_closed") < 0 {
			return fmt.Errorf("events: %v", names(ev.events(id)))
		}
		return nil
	})
	stopped := len(ev.events(id))
	if r := e.clawker("stop", "-p", "clilife", "nosuch"); r.code != 4 || !strings.Contains(r.stderr, "no agent nosuch") {
		t.Fatalf("stop of an unknown agent: %s", r)
	}

	// start: boot steps only, the user CMD respawned.
	if r := e.must("start", "-p", "clilife", "cyc"); r.stdout != "cyc\n" {
		t.Fatalf("start printed %q", r.stdout)
	}
	if !inspect(t, id).State.Running {
		t.Fatal("not running after clawker start")
	}
	second := initDone(stopped, "start reaches init_completed")
	if err := sameSteps(stepsStarted(second), []string{"pre-run", "agent-ready"}); err != nil {
		t.Errorf("clawker start: %v", err)
	}
	if c := named(second, "session_connected"); len(c) != 1 || c[0].Fields["Registered"] != "true" {
		t.Errorf("start: want one session_connected with Registered=true, got %+v", c)
	}
	logsShow(2)

	// restart: the same boot steps again.
	restarted := len(ev.events(id))
	if r := e.must("restart", "-p", "clilife", "-t", "5", "cyc"); r.stdout != "cyc\n" {
		t.Fatalf("restart printed %q", r.stdout)
	}
	third := initDone(restarted, "restart reaches init_completed")
	if err := sameSteps(stepsStarted(third), []string{"pre-run", "agent-ready"}); err != nil {
		t.Errorf("clawker restart: %v", err)
	}
	if indexOf(third, "session_closed") < 0 {
		t.Errorf("restart: no session_closed: %v", names(third))
	}
	logsShow(3)
	// logs -f prints the history and follows until the agent stops, as
	// docker logs -f does.
	follow := e.start("logs", "-f", "-p", "clilife", "cyc")
	eventually(t, 30*time.Second, "logs -f prints the history", func() error {
		follow.mu.Lock()
		out := strings.Join(follow.lines, "\n")
		follow.mu.Unlock()
		if countExactLines(out, "cmd-ran") != 3 {
			return fmt.Errorf("logs -f so far: %q", out)
		}
		return nil
	})
	select {
	case <-follow.done:
		t.Fatal("logs -f ended while the agent runs")
	default:
	}
	if r := e.must("logs", "-p", "clilife", "--debug", "-n", "1", "cyc"); strings.Count(strings.TrimSpace(r.stdout+r.stderr), "\n") != 0 {
		t.Errorf("logs -n 1 printed more than one line: %s", r)
	}

	evs := ev.events(id)
	if r := named(evs, "agent_registered"); len(r) != 1 {
		t.Errorf("stop/start/restart re-registered: %d agent_registered", len(r))
	}
	if b := named(evs, "session_broken"); len(b) > 0 {
		t.Errorf("clawker stop/restart produced session_broken: %+v", b)
	}
	if n := lineCount(t, id, "/tmp/post-init.log"); n != 1 {
		t.Errorf("post-init ran %d times, want 1", n)
	}
	if n := lineCount(t, id, "/tmp/pre-run.log"); n != 3 {
		t.Errorf("pre-run ran %d times, want 3", n)
	}
	if r, ok := findAgent(e.agents(), id); !ok || r.Session != "connected" || r.Init != "completed" {
		t.Errorf("row after restart: %+v", r)
	}
	e.must("stop", "-p", "clilife", "cyc")
	select {
	case <-follow.done:
	case <-time.After(30 * time.Second):
		t.Error("logs -f still following 30s after the agent stopped")
	}
}
