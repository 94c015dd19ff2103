package clawkerd

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// onceCmd is a one-time step that appends a line to log and then, when
// gate is not "", waits for that file to exist before it exits 0.
func onceCmd(key, log, gate string) *clawkerdv1.ShellCommand {
	script := `echo ran >> "$1"`
	if gate != "" {
		script += `; while [ ! -e "$2" ]; do sleep 0.01; done`
	}
	return &clawkerdv1.ShellCommand{OnceKey: key,
		Stages: []*clawkerdv1.PipeStage{stage("/bin/sh", "-c", script, "sh", log, gate)}}
}

func runs(t *testing.T, log string) int {
	t.Helper()
	b, err := os.ReadFile(log)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "ran\n")
}

func TestOnceStepRecordedAndNotRerun(t *testing.T) {
	ts := startServer(t, nil)
	log := filepath.Join(t.TempDir(), "runs")
	c := ts.session(t)
	ack := c.hello()
	if !clawkerdv1.HasCapability(ack, clawkerdv1.CapInitOnce) || len(ack.GetCompletedOnce()) != 0 {
		t.Fatalf("fresh HelloAck: %v", ack)
	}
	if r := c.run("a", onceCmd("post-init", log, "")); r.done == nil || r.done.GetFinalExitCode() != 0 {
		t.Fatalf("first run: %+v", r)
	}
	// Recorded before the Done: the marker exists now.
	if _, err := os.Stat(filepath.Join(ts.srv.cfg.InitMarkerPath+".once", "post-init")); err != nil {
		t.Fatalf("no record after Done: %v", err)
	}
	// Same key again, on this and on a new Session: Done(0), not run.
	if r := c.run("b", onceCmd("post-init", log, "")); r.done == nil || r.done.GetFinalExitCode() != 0 || r.started {
		t.Fatalf("repeat: %+v", r)
	}
	c2 := ts.session(t)
	if got := c2.hello().GetCompletedOnce(); !reflect.DeepEqual(got, []string{"post-init"}) {
		t.Fatalf("completed_once = %v", got)
	}
	if r := c2.run("a", onceCmd("post-init", log, "")); r.done == nil || r.started {
		t.Fatalf("repeat on new session: %+v", r)
	}
	// A failing step is not recorded, so it may run again.
	fail := &clawkerdv1.ShellCommand{OnceKey: "git", Stages: []*clawkerdv1.PipeStage{stage("/bin/sh", "-c", `echo ran >> "$1"; exit 3`, "sh", log)}}
	if r := c2.run("f1", fail); r.done.GetFinalExitCode() != 3 {
		t.Fatalf("failing step: %+v", r)
	}
	if r := c2.run("f2", fail); r.done.GetFinalExitCode() != 3 {
		t.Fatalf("failing step again: %+v", r)
	}
	if n := runs(t, log); n != 3 {
		t.Fatalf("%d runs, want 3 (post-init once, git twice)", n)
	}
	// A key that is not a plain name is refused before anything runs.
	if r := c2.run("bad", onceCmd("../x", log, "")); r.err.GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_INVALID_REQUEST {
		t.Fatalf("bad key: %+v", r)
	}
}

// The CP dies while a one-time step runs: clawkerd finishes and records
// it, and the reconnected CP's resend (while it still runs, and after)
// gets Done(0) without a second run.
func TestOnceStepSurvivesSessionLossMidCommand(t *testing.T) {
	ts := startServer(t, nil)
	dir := t.TempDir()
	log, gate := filepath.Join(dir, "runs"), filepath.Join(dir, "gate")
	c := ts.session(t)
	c.send(shell("s1", onceCmd("post-init", log, gate)))
	if r := c.next("s1"); r.GetStarted() == nil {
		t.Fatalf("want Started, got %v", r)
	}
	eventually(t, 10*time.Second, "the step's side effect", func() bool { return runs(t, log) == 1 })
	c.close() // the CP side is gone mid-command

	c2 := ts.session(t)
	if got := c2.hello().GetCompletedOnce(); len(got) != 0 {
		t.Fatalf("completed_once while still running = %v", got)
	}
	c2.send(shell("s1", onceCmd("post-init", log, gate))) // waits for the first run
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := c2.collect("s1"); r.done == nil || r.done.GetFinalExitCode() != 0 || r.started {
		t.Fatalf("resend while running: %+v", r)
	}
	eventually(t, 10*time.Second, "record", func() bool { return ts.srv.once.recorded("post-init") })
	if n := runs(t, log); n != 1 {
		t.Fatalf("step ran %d times, want 1", n)
	}
}
