package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/clawkerd"
)

// attachReady dials a real clawkerd whose user CMD is a shell on a
// terminal and returns its container ID once the CMD runs.
func attachReady(t *testing.T, env *dtEnv) string {
	t.Helper()
	id := dtContainerID(t)
	startRealClawkerdWith(t, env, id, func(c *clawkerd.Config) { c.UserCmd, c.TTY = []string{"/bin/sh"}, true })
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	dtWait(t, "session ready", func() bool { s := env.dialer.Sessions(); return len(s) == 1 && s[0].Ready })
	return id
}

func attachTo(t *testing.T, env *dtEnv, id string) *ExecHandle {
	t.Helper()
	h, err := env.dialer.Exec(context.Background(), id, &clawkerdv1.ShellCommand{AttachUserCmd: true,
		Tty: &clawkerdv1.Tty{Rows: 24, Cols: 80}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// awaitStarted reads h until clawkerd says the attach is subscribed to
// the terminal: stdin sent before that could be echoed to nobody.
func awaitStarted(t *testing.T, h *ExecHandle) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case r, ok := <-h.Responses():
			if !ok || r.GetDone() != nil || r.GetError() != nil {
				t.Fatalf("attach ended before it started: %v", r)
			}
			if r.GetStarted() != nil {
				return
			}
		case <-timeout:
			t.Fatal("attach not started")
		}
	}
}

// awaitText reads h until its output shows text.
func awaitText(t *testing.T, h *ExecHandle, text string) {
	t.Helper()
	var screen strings.Builder
	timeout := time.After(30 * time.Second)
	for !strings.Contains(screen.String(), text) {
		select {
		case r, ok := <-h.Responses():
			if !ok || r.GetDone() != nil || r.GetError() != nil {
				t.Fatalf("attach ended before %q: %v; screen %q", text, r, screen.String())
			}
			screen.Write(r.GetOutput().GetData())
		case <-timeout:
			t.Fatalf("no %q; screen %q", text, screen.String())
		}
	}
}

// TestAttachedClientsGetTheUserCmdExit: two attaches through the Dialer
// to a real clawkerd's user CMD; when the CMD exits 7, each handle ends
// with Done 7 (not the Session's IO_ERROR), so every attached clawker
// exits 7 without asking Docker.
func TestAttachedClientsGetTheUserCmdExit(t *testing.T) {
	env := newDTEnv(t, nil)
	id := attachReady(t, env)
	a, b := attachTo(t, env, id), attachTo(t, env, id)
	awaitStarted(t, a)
	awaitStarted(t, b)
	if err := a.Stdin([]byte("echo both-$((5*5))\n")); err != nil {
		t.Fatal(err)
	}
	awaitText(t, a, "both-25")
	awaitText(t, b, "both-25")
	if err := b.Stdin([]byte("exit 7\n")); err != nil {
		t.Fatal(err)
	}
	for name, h := range map[string]*ExecHandle{"a": a, "b": b} {
		if _, done, exErr := drain(t, h); done == nil || done.GetFinalExitCode() != 7 {
			t.Fatalf("attach %s after the CMD exited 7: done=%v err=%v", name, done, exErr)
		}
	}
}

// TestAttachEndsWhenTheSessionBreaks: an attach whose Session goes away
// ends with IO_ERROR at once (the CLI then takes the container's code),
// never waiting on a peer that is gone.
func TestAttachEndsWhenTheSessionBreaks(t *testing.T) {
	env := newDTEnv(t, nil)
	id := attachReady(t, env)
	h := attachTo(t, env, id)
	awaitStarted(t, h)
	if err := h.Stdin([]byte("echo up-$((2*3))\n")); err != nil {
		t.Fatal(err)
	}
	awaitText(t, h, "up-6")
	env.dialer.CancelDial(id)
	if _, done, exErr := drain(t, h); done != nil || exErr.GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_IO_ERROR {
		t.Fatalf("attach after the Session broke: done=%v err=%v", done, exErr)
	}
}
