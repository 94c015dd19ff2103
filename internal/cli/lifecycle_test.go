package cli

import (
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"

	"github.com/clawker/clawker/internal/consts"
)

// agentCtr is an agent container as clawker run labels it.
func agentCtr(id, project, agent string, st container.ContainerState) *fakeCtr {
	l := map[string]string{consts.LabelManaged: "true", consts.LabelPurpose: consts.PurposeAgent, consts.LabelAgent: agent}
	if project != "" {
		l[consts.LabelProject] = project
	}
	name := "clawker." + agent
	if project != "" {
		name = "clawker." + project + "." + agent
	}
	return &fakeCtr{id: strings.Repeat(id, 64/len(id)), name: name, labels: l, state: st}
}

func TestRmRefusesRunningAgentAndNamesStop(t *testing.T) {
	run := agentCtr("a1", "web", "dev", container.StateRunning)
	stopped := agentCtr("b2", "web", "old", container.StateExited)
	other := agentCtr("c3", "api", "dev", container.StateExited) // same name, other project
	f := &fakeDocker{containers: []*fakeCtr{run, stopped, other}}
	h := &harness{home: initHome(t), docker: f}

	out, stderr, code := h.run(t, "rm", "-p", "web", "dev")
	if code != ExitError || !strings.Contains(stderr, "clawker stop --project web dev") || !strings.Contains(stderr, "--force") || out != "" {
		t.Fatalf("rm running: exit %d out %q stderr %q", code, out, stderr)
	}
	if f.called("remove", run.id) || f.called("remove", other.id) {
		t.Fatalf("a refused rm reached ContainerRemove: %v", f.calls)
	}
	out, _, code = h.run(t, "rm", "-p", "web", "old")
	if code != 0 || out != "old\n" || !f.called("remove", stopped.id) || f.called("remove", other.id) {
		t.Fatalf("rm stopped: exit %d out %q calls %v", code, out, f.calls)
	}
	out, _, code = h.run(t, "rm", "-f", "-p", "web", "dev")
	if code != 0 || out != "dev\n" || !f.called("remove", run.id) {
		t.Fatalf("rm --force: exit %d out %q calls %v", code, out, f.calls)
	}
	_, stderr, code = h.run(t, "rm", "-p", "web", "ghost")
	if code != ExitNotFound || !strings.Contains(stderr, "no agent ghost in project web") {
		t.Fatalf("rm ghost: exit %d %q", code, stderr)
	}
}

func TestRmStateDropsOnlyThatAgentsVolumes(t *testing.T) {
	c := agentCtr("d4", "", "dev", container.StateExited)
	vol := func(agent string) map[string]string {
		return map[string]string{consts.LabelPurpose: purposeState, consts.LabelAgent: agent}
	}
	f := &fakeDocker{containers: []*fakeCtr{c}, volumes: map[string]map[string]string{"v-dev": vol("dev"), "v-other": vol("other")}}
	h := &harness{home: initHome(t), docker: f}
	if _, stderr, code := h.run(t, "rm", "--state", "dev"); code != 0 {
		t.Fatalf("rm --state: %d %s", code, stderr)
	}
	if !f.called("volume-remove", "v-dev") || f.called("volume-remove", "v-other") {
		t.Fatalf("calls %v", f.calls)
	}
}

// stop, start and restart act on the named agent of the project only,
// print its name as docker does, and exit 4 for an unknown agent while
// still handling the others.
func TestStopStartRestartByName(t *testing.T) {
	dev := agentCtr("e5", "web", "dev", container.StateRunning)
	twin := agentCtr("f6", "", "dev", container.StateRunning) // global agent of the same name
	f := &fakeDocker{containers: []*fakeCtr{dev, twin}}
	h := &harness{home: initHome(t), docker: f}

	out, stderr, code := h.run(t, "stop", "-p", "web", "-t", "3", "dev")
	if code != 0 || out != "dev\n" || !f.called("stop-t3", dev.id) || f.called("stop-t3", twin.id) {
		t.Fatalf("stop: exit %d out %q stderr %q calls %v", code, out, stderr, f.calls)
	}
	if dev.state != container.StateExited || twin.state != container.StateRunning {
		t.Fatalf("states after stop: %s %s", dev.state, twin.state)
	}
	out, _, code = h.run(t, "start", "-p", "web", "dev")
	if code != 0 || out != "dev\n" || dev.state != container.StateRunning {
		t.Fatalf("start: exit %d out %q state %s", code, out, dev.state)
	}
	out, stderr, code = h.run(t, "restart", "-p", "web", "ghost", "dev")
	if code != ExitNotFound || out != "dev\n" || !strings.Contains(stderr, "no agent ghost") || !f.called("restart", dev.id) {
		t.Fatalf("restart: exit %d out %q stderr %q calls %v", code, out, stderr, f.calls)
	}
	// Without -t the engine's default applies (Timeout nil).
	if _, _, code = h.run(t, "stop", "dev"); code != 0 || !f.called("stop", twin.id) {
		t.Fatalf("stop global: %d %v", code, f.calls)
	}
	// A container wearing an agent's labels under another name is not
	// that agent.
	imp := agentCtr("0f", "web", "ghost", container.StateRunning)
	imp.name = "innocent"
	f.containers = append(f.containers, imp)
	if _, stderr, code := h.run(t, "stop", "-p", "web", "ghost"); code != ExitNotFound || f.called("stop", imp.id) {
		t.Fatalf("stop of a label impostor: %d %q %v", code, stderr, f.calls)
	}
}

func TestLifecycleBadInputsNeverReachDocker(t *testing.T) {
	home := initHome(t)
	for _, args := range [][]string{
		{"stop"}, {"start", "Bad!"}, {"restart", "-p", "../x", "dev"}, {"logs"}, {"logs", "dev", "--tail", "-3"}, {"logs", "a", "b"},
	} {
		h := &harness{home: home}
		if _, stderr, code := h.run(t, args...); code != ExitUsage || h.dockerCalls != 0 {
			t.Errorf("%v: exit %d, %d Docker calls, stderr %q", args, code, h.dockerCalls, stderr)
		}
	}
}

// logs shows the user command's stdout and stderr apart, without
// clawkerd's own JSON log lines unless --debug.
func TestLogsShowsTheUserConsole(t *testing.T) {
	c := agentCtr("a7", "web", "dev", container.StateExited)
	c.stdout = "hello out\n"
	c.stderr = `{"level":"info","component":"clawkerd","event":"listening"}` + "\n" + "oops err\n"
	f := &fakeDocker{containers: []*fakeCtr{c}}
	h := &harness{home: initHome(t), docker: f}
	out, stderr, code := h.run(t, "logs", "-p", "web", "dev")
	if code != 0 || out != "hello out\n" || stderr != "oops err\n" {
		t.Fatalf("logs: exit %d out %q stderr %q", code, out, stderr)
	}
	_, stderr, _ = h.run(t, "logs", "--debug", "-p", "web", "dev")
	if !strings.Contains(stderr, `"component":"clawkerd"`) {
		t.Fatalf("logs --debug dropped clawkerd's lines: %q", stderr)
	}
	c.tty = true
	c.stdout = "raw tty bytes\r\n"
	if out, _, code = h.run(t, "logs", "-p", "web", "dev"); code != 0 || out != "raw tty bytes\r\n" {
		t.Fatalf("tty logs: %d %q", code, out)
	}
	if _, stderr, code = h.run(t, "logs", "dev"); code != ExitNotFound {
		t.Fatalf("logs of a global dev that does not exist: %d %q", code, stderr)
	}
}

// Completion offers the project's agents from Docker's labels: stop only
// running ones, start only stopped ones.
func TestCompletionOfAgentNames(t *testing.T) {
	f := &fakeDocker{containers: []*fakeCtr{
		agentCtr("b8", "web", "up", container.StateRunning),
		agentCtr("c9", "web", "down", container.StateExited),
		agentCtr("da", "api", "elsewhere", container.StateRunning),
	}}
	h := &harness{home: initHome(t), docker: f}
	for cmd, want := range map[string]string{"stop": "up", "start": "down", "logs": "up down"} {
		out, _, code := h.run(t, "__complete", cmd, "-p", "web", "")
		got := strings.Fields(strings.Split(out, ":")[0])
		if code != 0 || strings.Join(got, " ") != want {
			t.Errorf("complete %s: %q, want %q", cmd, out, want)
		}
	}
}
