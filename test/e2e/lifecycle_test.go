package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/consts"
)

// Hook scripts that leave a trace in the container's writable layer, so
// a test can count how often each ran.
var traceHooks = map[string][]string{
	"post-init": {"echo post >> /tmp/post-init.log"},
	"pre-run":   {"echo pre >> /tmp/pre-run.log"},
}

// oneTimeSteps are the init steps that must run once per container.
var oneTimeSteps = []string{"config", "git", "ssh", "post-init"}

// TestLifecycleStopStartRemove is issue 5's container lifecycle on the real
// engine: start → session_connected → agent_registered → init_completed;
// docker stop → the Session is closed without session_broken; docker start
// → Match (no second agent_registered), one-time init skipped, pre-run and
// agent-ready run again and the user CMD is respawned; docker rm → the
// registry row is evicted.
func TestLifecycleStopStartRemove(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	dir := projectDir(t, traceHooks)

	ev := e.start("events", "-f", "--since", "0", "--project", "life", "-o", "json")
	id := strings.TrimSpace(e.must("run", "-d", "--project", "life", "--agent", "cycler", "--project-dir", dir,
		agentImage, "sh", "-c", "echo cmd-ran; exec sleep 3600").stdout)

	// First start: the full plan, in order.
	eventually(t, 90*time.Second, "first start reaches init_completed", func() error {
		if indexOf(ev.events(id), "init_completed") < 0 {
			return fmt.Errorf("events so far: %v", names(ev.events(id)))
		}
		return nil
	})
	first := ev.events(id)
	conn, reg, done := indexOf(first, "session_connected"), indexOf(first, "agent_registered"), indexOf(first, "init_completed")
	if conn < 0 || reg < 0 || !(conn < reg && reg < done) {
		t.Fatalf("want session_connected → agent_registered → init_completed, got %v", names(first))
	}
	if r := named(first, "agent_registered")[0]; r.Fields["Ok"] != "true" {
		t.Errorf("agent_registered not ok: %+v", r)
	}
	if err := sameSteps(stepsStarted(first), append(append([]string(nil), oneTimeSteps...), "pre-run", "agent-ready")); err != nil {
		t.Errorf("first start: %v", err)
	}
	eventually(t, 30*time.Second, "user CMD ran once", func() error {
		if n := cmdRuns(t, id, "cmd-ran"); n != 1 {
			return fmt.Errorf("cmd-ran seen %d times", n)
		}
		return nil
	})

	// docker stop: the CP tears the Session down on purpose.
	stopContainer(t, id)
	eventually(t, 30*time.Second, "session closed after stop", func() error {
		evs := ev.events(id)
		if indexOf(evs[len(first):], "session_closed") < 0 {
			return fmt.Errorf("events after stop: %v", names(evs[len(first):]))
		}
		if r, ok := findAgent(e.agents(), id); !ok || r.Session == "connected" {
			return fmt.Errorf("row after stop: %+v (listed %v)", r, ok)
		}
		return nil
	})
	if b := named(ev.events(id), "session_broken"); len(b) > 0 {
		t.Errorf("docker stop produced session_broken: %+v", b)
	}
	stopped := len(ev.events(id))

	// docker start: Match, init skipped, boot steps run.
	startContainer(t, id)
	eventually(t, 90*time.Second, "second start reaches init_completed", func() error {
		if indexOf(ev.events(id)[stopped:], "init_completed") < 0 {
			return fmt.Errorf("events after start: %v", names(ev.events(id)[stopped:]))
		}
		return nil
	})
	second := ev.events(id)[stopped:]
	if c := named(second, "session_connected"); len(c) != 1 || c[0].Fields["Registered"] != "true" {
		t.Errorf("restart: want one session_connected with Registered=true (Match), got %+v", c)
	}
	if r := named(ev.events(id), "agent_registered"); len(r) != 1 {
		t.Errorf("restart re-registered: %d agent_registered events", len(r))
	}
	if err := sameSteps(stepsStarted(second), []string{"pre-run", "agent-ready"}); err != nil {
		t.Errorf("restart: %v", err)
	}
	if n := lineCount(t, id, "/tmp/post-init.log"); n != 1 {
		t.Errorf("post-init hook ran %d times, want 1", n)
	}
	if n := lineCount(t, id, "/tmp/pre-run.log"); n != 2 {
		t.Errorf("pre-run hook ran %d times, want 2", n)
	}
	eventually(t, 30*time.Second, "user CMD respawned", func() error {
		if n := cmdRuns(t, id, "cmd-ran"); n != 2 {
			return fmt.Errorf("cmd-ran seen %d times", n)
		}
		return nil
	})
	if b := named(ev.events(id), "session_broken"); len(b) > 0 {
		t.Errorf("stop/start produced session_broken: %+v", b)
	}
	if r, ok := findAgent(e.agents(), id); !ok || !r.Registered || r.Session != "connected" || r.Init != "completed" {
		t.Errorf("row after restart: %+v", r)
	}

	// docker rm (without -v): the row is evicted, and the CP prunes the
	// agent's clawkerd volume that rm left behind.
	vol := clawkerdVolume(t, id)
	if _, err := suite.docker.ContainerRemove(context.Background(), id, mobyclient.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "row evicted after rm", func() error {
		if r, ok := findAgent(e.agents(), id); ok {
			return fmt.Errorf("still listed: %+v", r)
		}
		return nil
	})
	eventually(t, 30*time.Second, "clawkerd volume pruned after docker rm", func() error {
		if _, err := suite.docker.VolumeInspect(context.Background(), vol, mobyclient.VolumeInspectOptions{}); !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("volume %s: err=%v", vol, err)
		}
		return nil
	})
}

// TestLifecycleCPRestart: with five agents running, the CP container is
// removed and brought back on the same registry volume; every agent is
// re-dialed and classifies as Match — no agent_registered, no one-time
// init step, no second post-init, and the user CMD is not respawned.
func TestLifecycleCPRestart(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	dir := projectDir(t, traceHooks)

	const n = 5
	ids := make([]string, n)
	for i := range ids {
		ids[i] = strings.TrimSpace(e.must("run", "-d", "--project", "cprestart", "--agent", fmt.Sprintf("a%d", i),
			"--project-dir", dir, agentImage, "sh", "-c", "echo cmd-ran; exec sleep 3600").stdout)
	}
	waitAll := func(what string) {
		t.Helper()
		eventually(t, 120*time.Second, what, func() error {
			rows := e.agents()
			for _, id := range ids {
				r, ok := findAgent(rows, id)
				if !ok || !r.Registered || r.Session != "connected" || r.Init != "completed" {
					return fmt.Errorf("%s: %+v", id[:12], r)
				}
			}
			return nil
		})
	}
	waitAll("all agents registered and initialised")

	holder := inspectFull(t, consts.ControlPlaneNetContainer).ID
	e.must("cp", "down")
	e.must("cp", "up", "--wait", "90s")
	waitAll("all agents reconnected and initialised after CP restart")
	// The new CP runs in the namespace the old one left, which is still on
	// every agent's own network at the address the agent trusts: the CP
	// joined none of them.
	if got := inspectFull(t, consts.ControlPlaneNetContainer).ID; got != holder {
		t.Errorf("cp down/up replaced the network holder: %s -> %s", holder[:12], got[:12])
	}
	if mode := inspectFull(t, consts.ControlPlaneContainer).HostConfig.NetworkMode; string(mode) != "container:"+holder {
		t.Errorf("CP network mode %q, want the holder's namespace", mode)
	}
	for _, id := range ids {
		if err := cpOnAgentNet(id); err != nil {
			t.Error(err)
		}
	}
	if r := e.must("cp", "logs"); strings.Contains(r.stdout+r.stderr, "agent_network_cp_connected") {
		t.Errorf("the restarted CP joined agent networks:\n%s", lastLines(r.stdout+r.stderr, 40))
	}

	evs := e.replay()
	if r := named(evs, "agent_registered"); len(r) > 0 {
		t.Errorf("CP restart re-registered: %+v", r)
	}
	for _, id := range ids {
		mine := forContainer(evs, id)
		c := named(mine, "session_connected")
		if len(c) != 1 || c[0].Fields["Registered"] != "true" {
			t.Errorf("%s: want one session_connected with Registered=true (Match), got %v", id[:12], names(mine))
		}
		for _, s := range stepsStarted(mine) {
			for _, once := range oneTimeSteps {
				if s == once {
					t.Errorf("%s: one-time step %s ran after CP restart (steps %v)", id[:12], s, stepsStarted(mine))
				}
			}
			if s == "agent-ready" {
				t.Errorf("%s: agent-ready ran although the user CMD was running", id[:12])
			}
		}
		if len(named(mine, "session_broken")) > 0 || len(named(mine, "init_failed")) > 0 {
			t.Errorf("%s: unexpected events %v", id[:12], names(mine))
		}
		// A CP restart is not a container start: no boot step re-runs.
		if steps := stepsStarted(mine); len(steps) != 0 {
			t.Errorf("%s: steps ran after CP restart: %v", id[:12], steps)
		}
		if k := lineCount(t, id, "/tmp/pre-run.log"); k != 1 {
			t.Errorf("%s: pre-run ran %d times, want 1", id[:12], k)
		}
		if k := lineCount(t, id, "/tmp/post-init.log"); k != 1 {
			t.Errorf("%s: post-init ran %d times, want 1", id[:12], k)
		}
		if k := cmdRuns(t, id, "cmd-ran"); k != 1 {
			t.Errorf("%s: user CMD ran %d times, want 1", id[:12], k)
		}
	}
}

// TestLifecycleFailingPostInit: a post-init hook exiting 7 ends the plan
// with init_failed carrying exit code 7, and the container exits with 7.
func TestLifecycleFailingPostInit(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	dir := projectDir(t, map[string][]string{"post-init": {"echo hook-boom", "exit 7"}})

	ev := e.start("events", "-f", "--since", "0", "--project", "failing", "-o", "json")
	id := strings.TrimSpace(e.must("run", "-d", "--project", "failing", "--agent", "broken", "--project-dir", dir,
		agentImage, "sh", "-c", "echo cmd-ran; exec sleep 3600").stdout)

	eventually(t, 90*time.Second, "init_failed", func() error {
		if indexOf(ev.events(id), "init_failed") < 0 {
			return fmt.Errorf("events so far: %v", names(ev.events(id)))
		}
		return nil
	})
	evs := ev.events(id)
	f := named(evs, "init_failed")[0]
	if f.Fields["ExitCode"] != "7" || f.Fields["FailedStep"] != "post-init" {
		t.Errorf("init_failed: want post-init with exit code 7, got %+v", f.Fields)
	}
	if !strings.Contains(f.Fields["Detail"], "7") {
		t.Errorf("init_failed detail lacks the exit code: %q", f.Fields["Detail"])
	}
	if len(named(evs, "init_completed")) > 0 {
		t.Errorf("init_completed despite a failed hook: %v", names(evs))
	}
	if s := stepsStarted(evs); len(s) == 0 || s[len(s)-1] != "post-init" {
		t.Errorf("plan did not halt at post-init: %v", s)
	}
	eventually(t, 60*time.Second, "container exited with 7", func() error {
		s := inspect(t, id).State
		if s.Running || s.ExitCode != 7 {
			return fmt.Errorf("state %s exit %d", s.Status, s.ExitCode)
		}
		return nil
	})
	if cmdRuns(t, id, "cmd-ran") > 0 {
		t.Errorf("user CMD ran although post-init failed")
	}
}

// cpOnAgentNet checks that the CP container has an endpoint at its pinned
// address on the agent network of container id.
func cpOnAgentNet(id string) error {
	ctx := context.Background()
	c, err := suite.docker.ContainerInspect(ctx, id, mobyclient.ContainerInspectOptions{})
	if err != nil {
		return err
	}
	name, ok := agentnet.NameFromLabels(c.Container.Config.Labels)
	if !ok {
		return fmt.Errorf("%s: no agent network in its labels", id[:12])
	}
	nr, err := suite.docker.NetworkInspect(ctx, name, mobyclient.NetworkInspectOptions{})
	if err != nil {
		return err
	}
	n, ok := agentnet.Parse(nr.Network.Network)
	if !ok {
		return fmt.Errorf("%s: not an agent network", name)
	}
	cp, err := suite.docker.ContainerInspect(ctx, consts.ControlPlaneNetContainer, mobyclient.ContainerInspectOptions{})
	if err != nil {
		return err
	}
	ep := cp.Container.NetworkSettings.Networks[name]
	if ep == nil || ep.IPAddress != n.CPAddr() {
		return fmt.Errorf("CP not on %s at %s: %+v", name, n.CPAddr(), ep)
	}
	return nil
}
