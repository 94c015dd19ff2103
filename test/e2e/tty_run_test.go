package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestRunInteractiveTTYAttach drives `clawker run -it` on a real terminal
// (tmux): the user CMD is a shell on a terminal; typed input, a resize
// seen by stty, a full-screen program (busybox top); the detach sequence
// leaves it running; two `clawker attach` clients at once see the same
// screen; the CMD's exit code ends both.
func TestRunInteractiveTTYAttach(t *testing.T) {
	e := newEnv(t)
	importUserImage(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	p := e.tmuxRun(30, 100, "run", "-it", "--agent", "tt", userImage, "sh")
	// The prompt may come before the attach: type until the shell answers.
	p.literal("echo run-$((3*3))")
	p.keys("Enter")
	p.waitText("run-9")
	p.literal("clear; stty size; id -u")
	p.keys("Enter")
	p.waitFor("size 30 100 as uid 1000", func(s string) bool { return strings.Contains(s, "30 100\n1000") })
	p.shot("run-shell")
	p.resize(40, 120)
	p.literal("clear; stty size")
	p.keys("Enter")
	p.waitText("40 120")

	p.literal("top")
	p.keys("Enter")
	p.waitText("Mem:")
	p.shot("run-top")
	p.keys("C-p", "C-q")
	if code := p.exitStatus(); code != 0 {
		t.Fatalf("detach: clawker run exit %d, want 0; screen:\n%s", code, p.capture())
	}
	p.waitText("detached from")
	p.shot("run-detached")
	id := ""
	for _, r := range e.agents() {
		if r.Agent == "tt" {
			id = r.ContainerID
		}
	}
	if id == "" {
		t.Fatalf("agent tt gone after detach: %+v", e.agents())
	}

	// Two clients attach at once; top redraws for each (SIGWINCH).
	a1 := e.tmuxRun(40, 120, "attach", "tt")
	a1.waitText("Mem:")
	a2 := e.tmuxRun(30, 100, "attach", "tt")
	a2.waitText("Mem:")
	a1.literal("q")
	a1.runUntil("echo both-$((5*5))", "both-25")
	a2.waitText("both-25")
	a1.shot("attach-a")
	a2.shot("attach-b")
	// Detach one, reattach it: detach/attach cycles work.
	a2.keys("C-p", "C-q")
	if code := a2.exitStatus(); code != 0 {
		t.Fatalf("attach detach: exit %d; screen:\n%s", code, a2.capture())
	}
	a3 := e.tmuxRun(30, 100, "attach", "tt")
	a3.literal("echo again-$((6*7))")
	a3.keys("Enter")
	a3.waitText("again-42")
	a1.waitText("again-42")
	a3.shot("attach-again")

	a3.literal("exit 7")
	a3.keys("Enter")
	for name, pane := range map[string]*tmuxPane{"attach 1": a1, "attach 3": a3} {
		if code := pane.exitStatus(); code != 7 {
			t.Errorf("%s: exit %d after the CMD exited 7; screen:\n%s", name, code, pane.capture())
		}
	}
	eventually(t, 60*time.Second, "container exited", func() error {
		st := inspectCtr(t, id).Container.State
		if st == nil || st.Running || st.ExitCode != 7 {
			return fmt.Errorf("state %+v", st)
		}
		return nil
	})
	p.saveShots("run-it")
	a1.saveShots("attach-1")
	a2.saveShots("attach-2")
	a3.saveShots("attach-3")
}
