package clawkerd

import (
	"time"

	"strings"
	"testing"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

func attachCmd(id string, rows, cols uint32) *clawkerdv1.Command {
	return shell(id, &clawkerdv1.ShellCommand{AttachUserCmd: true, Tty: &clawkerdv1.Tty{Rows: rows, Cols: cols}})
}

// screen accumulates one attach's output.
type screen struct {
	c   *client
	id  string
	got string
}

func (s *screen) waitText(t *testing.T, text string) {
	t.Helper()
	for !strings.Contains(s.got, text) {
		r := s.c.next(s.id)
		if r.GetStageExit() != nil {
			// No order holds between a stage's exit and its last output
			// (the user CMD's "exit 4" right after a print); Done does.
			continue
		}
		if r.GetOutput() == nil {
			t.Fatalf("%s: want output with %q, got %v after %q", s.id, text, r, s.got)
		}
		s.got += string(r.GetOutput().GetData())
	}
	s.got = s.got[strings.Index(s.got, text)+len(text):]
}

// TestAttachUserCmdTerminal: two clients attach to the user CMD's terminal
// at once and both see it; input from either reaches it; one detaches
// (the CMD keeps running), a new attach resizes it, and the CMD's exit
// ends the remaining attaches with its code.
func TestAttachUserCmdTerminal(t *testing.T) {
	t.Setenv("TERM", "") // the user CMD gets xterm, as under docker run -t
	ts := startServer(t, func(c *Config) { c.UserCmd, c.TTY = []string{"sh"}, true })
	c := ts.session(t)
	// An attach sent before the user CMD runs waits for it.
	c.send(attachCmd("a", 24, 80))
	c.send(&clawkerdv1.Command{CommandId: "ready", Payload: &clawkerdv1.Command_AgentReady{AgentReady: &clawkerdv1.AgentReady{}}})
	if r := c.next("ready"); r.GetDone() == nil {
		t.Fatalf("AgentReady: %v", r)
	}
	if r := c.next("a"); r.GetStarted() == nil {
		t.Fatalf("attach a: want Started, got %v", r)
	}
	c.send(attachCmd("b", 24, 80))
	if r := c.next("b"); r.GetStarted() == nil {
		t.Fatalf("attach b: want Started, got %v", r)
	}
	a, b := &screen{c: c, id: "a"}, &screen{c: c, id: "b"}
	c.send(stdinCmd("a", "echo from-a-$((1+1))\n"))
	a.waitText(t, "from-a-2")
	b.waitText(t, "from-a-2")
	c.send(stdinCmd("b", "echo from-b-$((2+2))-$TERM\n"))
	a.waitText(t, "from-b-4-xterm")
	b.waitText(t, "from-b-4-xterm")

	// a detaches: Done 0, the CMD runs on, b still sees it.
	c.send(&clawkerdv1.Command{CommandId: "a", Payload: &clawkerdv1.Command_CloseStdin{CloseStdin: &clawkerdv1.CloseStdin{}}})
	if res := c.collect("a"); res.done == nil || res.done.GetFinalExitCode() != 0 {
		t.Fatalf("detach: want Done 0, got %+v", res)
	}
	if !ts.srv.sup.running() {
		t.Fatal("detach stopped the user CMD")
	}
	// Reattach (a new id) with another size; a kill of an attach detaches too.
	c.send(attachCmd("a2", 40, 120))
	if r := c.next("a2"); r.GetStarted() == nil {
		t.Fatalf("reattach: want Started, got %v", r)
	}
	a2 := &screen{c: c, id: "a2"}
	c.send(stdinCmd("a2", "stty size | tr ' ' x\n"))
	a2.waitText(t, "40x120")
	b.waitText(t, "40x120")
	c.send(&clawkerdv1.Command{CommandId: "a2", Payload: &clawkerdv1.Command_Signal{Signal: &clawkerdv1.Signal{Signo: 9}}})
	if res := c.collect("a2"); res.done == nil || res.done.GetFinalExitCode() != 0 || !ts.srv.sup.running() {
		t.Fatalf("SIGKILL of an attach must detach, not kill: %+v running=%v", res, ts.srv.sup.running())
	}

	// The user CMD's exit ends clawkerd and with it the Session, but only
	// once every attached client has its Done with the CMD's exit code.
	c.send(attachCmd("c", 30, 100))
	if r := c.next("c"); r.GetStarted() == nil {
		t.Fatalf("attach c: want Started, got %v", r)
	}
	c.send(stdinCmd("b", "exit 6\n"))
	for _, id := range []string{"b", "c"} {
		if res := c.collect(id); res.done == nil || res.done.GetFinalExitCode() != 6 {
			t.Fatalf("attach %s after the CMD exited 6: want Done 6, got %+v", id, res)
		}
	}
	eventually(t, 30*time.Second, "user CMD exit", func() bool { return !ts.srv.sup.running() })
	if code := ts.srv.sup.exitCode(); code != 6 {
		t.Fatalf("user CMD exit code %d, want 6", code)
	}
	if !strings.Contains(ts.console.String(), "from-b-4") {
		t.Fatalf("the terminal's output must reach the console (docker logs): %q", ts.console.String())
	}
}

func TestAttachWithoutTerminalRefused(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.UserCmd = []string{"sleep", "60"} })
	c := ts.session(t)
	c.send(&clawkerdv1.Command{CommandId: "ready", Payload: &clawkerdv1.Command_AgentReady{AgentReady: &clawkerdv1.AgentReady{}}})
	c.next("ready")
	res := c.run("a", &clawkerdv1.ShellCommand{AttachUserCmd: true})
	if res.err.GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_SPAWN_FAILED || !strings.Contains(res.err.GetMessage(), "no terminal") {
		t.Fatalf("want SPAWN_FAILED naming the missing terminal, got %+v", res)
	}
	res = c.run("bad", &clawkerdv1.ShellCommand{AttachUserCmd: true, Stages: []*clawkerdv1.PipeStage{stage("true")}})
	if res.err.GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_INVALID_REQUEST {
		t.Fatalf("attach with stages: want INVALID_REQUEST, got %+v", res)
	}
	ts.srv.sup.kill()
}

// TestAttachGetsTheOutputBeforeTheExit: what the user CMD prints just
// before it exits reaches an attached client before its Done. The exit
// used to end the attach's subscription while the terminal still held
// those bytes (seen as a lost `stty size` before `exit 4`).
func TestAttachGetsTheOutputBeforeTheExit(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.UserCmd, c.TTY = []string{"sh"}, true })
	c := ts.session(t)
	c.send(attachCmd("a", 24, 80))
	c.send(&clawkerdv1.Command{CommandId: "ready", Payload: &clawkerdv1.Command_AgentReady{AgentReady: &clawkerdv1.AgentReady{}}})
	c.next("ready")
	if r := c.next("a"); r.GetStarted() == nil {
		t.Fatalf("attach: want Started, got %v", r)
	}
	// 64 KiB, far more than the terminal buffers, ends with a marker.
	c.send(stdinCmd("a", "i=0; while [ $i -lt 1000 ]; do echo line-$i-..............................................; i=$((i+1)); done; echo tail-$((6*7)); exit 4\n"))
	res := c.collect("a")
	if res.done == nil || res.done.GetFinalExitCode() != 4 {
		t.Fatalf("attach after the CMD exited 4: %+v", res.done)
	}
	if out := string(res.output); !strings.Contains(out, "tail-42") {
		t.Fatalf("the output before the exit was lost; last bytes %q", out[max(0, len(out)-200):])
	}
}
