package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// TestExecTTYResizeThroughDialer: an exec on a terminal through the
// Dialer against a real clawkerd: keys in, Resize reaching the terminal,
// the exit code out.
func TestExecTTYResizeThroughDialer(t *testing.T) {
	env := newDTEnv(t, nil)
	id := dtContainerID(t)
	startRealClawkerd(t, env, id)
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	dtWait(t, "session ready", func() bool { s := env.dialer.Sessions(); return len(s) == 1 && s[0].Ready })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h, err := env.dialer.Exec(ctx, id, &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{Argv: []string{"/bin/sh"}}},
		Tty: &clawkerdv1.Tty{Rows: 24, Cols: 80}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var screen strings.Builder
	until := func(text string) {
		t.Helper()
		for !strings.Contains(screen.String(), text) {
			select {
			case r, ok := <-h.Responses():
				if !ok || r.GetError() != nil {
					t.Fatalf("exec ended before %q: %v; screen %q", text, r, screen.String())
				}
				screen.Write(r.GetOutput().GetData())
			case <-ctx.Done():
				t.Fatalf("no %q; screen %q", text, screen.String())
			}
		}
	}
	if err := h.Stdin([]byte("stty size | tr ' ' x\n")); err != nil {
		t.Fatal(err)
	}
	until("24x80")
	if err := h.Resize(44, 99); err != nil {
		t.Fatal(err)
	}
	if err := h.Stdin([]byte("stty size | tr ' ' y; exit 2\n")); err != nil {
		t.Fatal(err)
	}
	until("44y99")
	out, done, exErr := drain(t, h)
	if exErr != nil || done.GetFinalExitCode() != 2 {
		t.Fatalf("want Done 2, got %v %v (%q)", done, exErr, out)
	}
}
