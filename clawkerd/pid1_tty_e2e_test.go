package clawkerd

import (
	"strings"
	"testing"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/consts"
)

// TestPID1TerminalsInContainer: as PID 1 in a real container (busybox),
// the user CMD runs on a terminal (CLAWKER_TTY=1) that Sessions attach
// to, detach from and reattach to, with resizes; an exec gets a terminal
// of its own; the CMD's exit code is the container's.
func TestPID1TerminalsInContainer(t *testing.T) {
	cli := dockerClient(t)
	sweep(t, cli)
	image := e2eImage(t, cli)
	registerImageCleanup(t, cli, image)
	pki := newTestPKI(t)
	id := startAgent(t, cli, image, pki, []string{"sh"}, consts.EnvTTY+"=1")
	c, ack := agentSession(t, cli, id, pki)
	if !clawkerdv1.HasCapability(ack, clawkerdv1.CapTTY) {
		t.Fatalf("HelloAck lacks tty/v1: %v", ack)
	}

	// An exec on a terminal of its own.
	res := c.run("ex", &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{stage("sh", "-c", "stty size; tty")},
		Tty: &clawkerdv1.Tty{Rows: 31, Cols: 91}})
	if out := string(res.output); res.done.GetFinalExitCode() != 0 || !contains(out, "31 91", "/dev/pts/") {
		t.Fatalf("exec -t in the container: %+v %q", res, out)
	}

	c.send(attachCmd("a", 30, 90))
	c.send(&clawkerdv1.Command{CommandId: "ready", Payload: &clawkerdv1.Command_AgentReady{AgentReady: &clawkerdv1.AgentReady{}}})
	c.next("ready")
	if r := c.next("a"); r.GetStarted() == nil {
		t.Fatalf("attach: %v", r)
	}
	a := &screen{c: c, id: "a"}
	c.send(stdinCmd("a", "echo hi-$((2+3)) $TERM; stty size\n"))
	a.waitText(t, "hi-5 xterm")
	a.waitText(t, "30 90")
	c.send(&clawkerdv1.Command{CommandId: "a", Payload: &clawkerdv1.Command_CloseStdin{CloseStdin: &clawkerdv1.CloseStdin{}}})
	if res := c.collect("a"); res.done.GetFinalExitCode() != 0 {
		t.Fatalf("detach: %+v", res)
	}
	if running, _ := inspectExit(t, cli, id); !running {
		t.Fatal("detach stopped the container")
	}
	c.send(attachCmd("b", 45, 130))
	if r := c.next("b"); r.GetStarted() == nil {
		t.Fatalf("reattach: %v", r)
	}
	b := &screen{c: c, id: "b"}
	c.send(stdinCmd("b", "stty size | tr ' ' x; exit 4\n"))
	b.waitText(t, "45x130")
	deadline := time.Now().Add(60 * time.Second)
	for {
		running, code := inspectExit(t, cli, id)
		if !running {
			if code != 4 {
				t.Fatalf("container exit %d, want the user CMD's 4", code)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("container still running after the user CMD's exit")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
