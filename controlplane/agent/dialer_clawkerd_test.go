package agent

import (
	"context"
	"os"
	"reflect"
	"strings"
	"testing"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

func TestDialRealClawkerdInitExecAndReconnect(t *testing.T) {
	env := newDTEnv(t, nil)
	id := dtContainerID(t)
	_, marker := startRealClawkerd(t, env, id)

	env.dialer.DialAgent(context.Background(), id)
	if ev := env.rec.wait(t, id, EventInitCompleted); ev == nil {
		t.Fatal("no InitCompleted")
	}
	if env.rec.has(id, EventInitFailed) || env.rec.has(id, EventAgentUntrusted) {
		t.Fatalf("events %v", env.rec.names(id))
	}
	if s := env.rec.events(id)[2].(InitStarted); s.StepCount != 6 {
		t.Fatalf("first start must run the full plan, got %d steps", s.StepCount)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("AgentInitialized did not write the init marker: %v", err)
	}

	dtWait(t, "session ready", func() bool {
		s := env.dialer.Sessions()
		return len(s) == 1 && s[0].Ready
	})
	h, err := env.dialer.Exec(context.Background(), id, &clawkerdv1.ShellCommand{
		Stages: []*clawkerdv1.PipeStage{{Argv: []string{"/bin/sh", "-c", "echo out-$((6*7)); exit 3"}}}})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	code := int32(-100)
	for r := range h.Responses() {
		out.Write(r.GetOutput().GetData())
		if d := r.GetDone(); d != nil {
			code = d.GetFinalExitCode()
		}
		if e := r.GetError(); e != nil {
			t.Fatalf("exec error: %v", e)
		}
	}
	if out.String() != "out-42\n" || code != 3 {
		t.Fatalf("exec: output %q code %d", out.String(), code)
	}

	// Stop → reconnect: the marker makes HelloAck.initialized true, so
	// only the boot steps run; Match means no Register.
	env.dialer.CancelDial(id)
	env.rec.wait(t, id, EventSessionClosed)
	before := len(env.rec.events(id))
	env.dialer.DialAgent(context.Background(), id)
	dtWait(t, "second InitCompleted", func() bool { return countEvents(env, id, EventInitCompleted) == 2 })
	var steps []string
	for _, e := range env.rec.events(id)[before:] {
		if s, ok := e.(InitStepStarted); ok {
			steps = append(steps, s.StepName)
		}
	}
	if !reflect.DeepEqual(steps, []string{StepPreRun, StepAgentReady}) &&
		!reflect.DeepEqual(steps, []string{StepPreRun}) {
		t.Fatalf("reconnect plan = %v, want boot steps only", steps)
	}
	if env.rec.has(id, EventAgentRegistered) || env.rec.has(id, EventSessionBroken) {
		t.Fatalf("events %v", env.rec.names(id))
	}
}

func drain(t *testing.T, h *ExecHandle) (string, *clawkerdv1.Done, *clawkerdv1.Error) {
	t.Helper()
	var out strings.Builder
	var done *clawkerdv1.Done
	var exErr *clawkerdv1.Error
	for r := range h.Responses() {
		out.Write(r.GetOutput().GetData())
		if d := r.GetDone(); d != nil {
			done = d
		}
		if e := r.GetError(); e != nil {
			exErr = e
		}
	}
	return out.String(), done, exErr
}

func TestExecStdinCancelAndSessionEnd(t *testing.T) {
	env := newDTEnv(t, nil)
	id := dtContainerID(t)
	startRealClawkerd(t, env, id)
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	dtWait(t, "session ready", func() bool {
		s := env.dialer.Sessions()
		return len(s) == 1 && s[0].Ready
	})

	// Stdin round trip.
	h, err := env.dialer.Exec(context.Background(), id, &clawkerdv1.ShellCommand{
		Stages: []*clawkerdv1.PipeStage{{Argv: []string{"/bin/sh", "-c", "cat"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Stdin([]byte("piped")); err != nil {
		t.Fatal(err)
	}
	if err := h.CloseStdin(); err != nil {
		t.Fatal(err)
	}
	if out, done, _ := drain(t, h); out != "piped" || done == nil || done.GetFinalExitCode() != 0 {
		t.Fatalf("cat: %q %v", out, done)
	}

	// Cancelling the caller's ctx kills the command.
	ctx, cancel := context.WithCancel(context.Background())
	h, err = env.dialer.Exec(ctx, id, &clawkerdv1.ShellCommand{
		Stages: []*clawkerdv1.PipeStage{{Argv: []string{"/bin/sh", "-c", "echo started; exec sleep 300"}}}})
	if err != nil {
		t.Fatal(err)
	}
	first := <-h.Responses() // Started or output: the command is live
	if first == nil {
		t.Fatal("handle closed before the command started")
	}
	cancel()
	if _, done, exErr := drain(t, h); (done == nil || done.GetFinalExitCode() == 0) && exErr == nil {
		t.Fatalf("killed command ended with done=%v err=%v", done, exErr)
	}

	// A Session ending under a live command fails the handle, never hangs it.
	h, err = env.dialer.Exec(context.Background(), id, &clawkerdv1.ShellCommand{
		Stages: []*clawkerdv1.PipeStage{{Argv: []string{"/bin/sh", "-c", "exec sleep 300"}}}})
	if err != nil {
		t.Fatal(err)
	}
	env.dialer.CancelDial(id)
	if _, done, exErr := drain(t, h); done != nil || exErr == nil || exErr.GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_IO_ERROR {
		t.Fatalf("after session end: done=%v err=%v", done, exErr)
	}
}
