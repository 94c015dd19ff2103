package agent

import (
	"context"
	"errors"
	"strings"
	"testing"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// A pinned but untrusted Session (its Register failed) refuses Exec on its
// own, without the admin gate: a Session replaced after the gate's check
// must not run the command. With AllowUntrusted (the operator's explicit
// --allow-untrusted) it runs, built from that Session's own HelloAck.
func TestExecRefusesUntrustedPinnedSession(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{registerOK: false}
	id, _ := env.agent(t, f)
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	dtWait(t, "session ready", func() bool {
		s := env.dialer.Sessions()
		return len(s) == 1 && s[0].Ready
	})
	cmd := func(word string) *clawkerdv1.ShellCommand {
		return &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{Argv: []string{"echo", word}}}}
	}
	if _, err := env.dialer.Exec(context.Background(), id, cmd("pwned")); !errors.Is(err, ErrSessionUntrusted) {
		t.Fatalf("Exec on an untrusted Session: %v, want ErrSessionUntrusted", err)
	}
	if _, err := env.dialer.Exec(context.Background(), id, cmd("pwned"), AllowUntrusted(false)); !errors.Is(err, ErrSessionUntrusted) {
		t.Fatalf("Exec with AllowUntrusted(false): %v", err)
	}
	built := false
	if _, err := env.dialer.ExecBuild(context.Background(), id, func(*clawkerdv1.HelloAck) (*clawkerdv1.ShellCommand, error) {
		built = true
		return cmd("pwned"), nil
	}); !errors.Is(err, ErrSessionUntrusted) || built {
		t.Fatalf("ExecBuild on an untrusted Session: %v (built %v)", err, built)
	}
	for _, tag := range f.seen() {
		if strings.Contains(tag, "echo") || strings.Contains(tag, "pwned") {
			t.Fatalf("the untrusted peer was sent a command: %v", f.seen())
		}
	}

	var gotAck *clawkerdv1.HelloAck
	h, err := env.dialer.ExecBuild(context.Background(), id, func(ack *clawkerdv1.HelloAck) (*clawkerdv1.ShellCommand, error) {
		gotAck = ack
		return cmd("allowed"), nil
	}, AllowUntrusted(true))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for r := range h.Responses() {
		out.Write(r.GetOutput().GetData())
	}
	if out.String() != "echo allowed" {
		t.Fatalf("allowed exec output %q", out.String())
	}
	if gotAck == nil || gotAck != env.dialer.HelloAck(id) {
		t.Fatalf("build got ack %v, want the running Session's", gotAck)
	}
}
