package agent

import (
	"context"
	"reflect"
	"strings"
	"testing"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/controlplane/overseer"
)

// TestExecutorUsesHelloAckUser: with the user in HelloAck no probe shell
// runs, and the hooks run as that user with its home.
func TestExecutorUsesHelloAckUser(t *testing.T) {
	p, _, rec, ex := newExecEnv(t)
	id := dtContainerID(t)
	f := startFake(t, p, &fakeClawkerd{}, p.agentLeaf(t, "proj", "dev", id))
	target := InitTarget{ContainerID: id, User: &clawkerdv1.ResolvedUser{Uid: 1500, Gid: 1600, Home: "/home/u"}}
	if err := ex.Run(context.Background(), openStream(t, p, f), target); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, id, EventInitCompleted)
	want := []string{StepConfig, StepGit, StepSSH, StepPostInit, "agent-initialized", StepPreRun, "agent-ready-cmd"}
	if got := f.seen(); !reflect.DeepEqual(got, want) {
		t.Fatalf("clawkerd saw %v, want %v (no probe-user)", got, want)
	}
	for _, step := range []string{StepConfig, StepGit, StepSSH, StepPostInit, StepPreRun} {
		st := f.shell(step).GetStages()[0]
		if st.GetUid() != 1500 || st.GetGid() != 1600 ||
			!strings.Contains(st.GetArgv()[2], "UID_=1500; GID_=1600; UHOME='/home/u'") {
			t.Fatalf("step %s sent as %+v", step, st)
		}
	}
}

// TestExecutorHelloAckNoShell: no_shell in HelloAck skips the shell steps
// (completed, not failed) without sending any shell command.
func TestExecutorHelloAckNoShell(t *testing.T) {
	p, _, rec, ex := newExecEnv(t)
	id := dtContainerID(t)
	f := startFake(t, p, &fakeClawkerd{noShell: true}, p.agentLeaf(t, "proj", "dev", id))
	target := InitTarget{ContainerID: id, User: &clawkerdv1.ResolvedUser{Home: "/root"}, NoShell: true}
	if err := ex.Run(context.Background(), openStream(t, p, f), target); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, id, EventInitCompleted)
	if got := f.seen(); !reflect.DeepEqual(got, []string{"agent-ready-cmd"}) {
		t.Fatalf("clawkerd saw %v: shell steps must be skipped, agent-ready still sent", got)
	}
	if rec.has(id, EventInitStepFailed) {
		t.Fatal("no-shell image must not fail init")
	}
	if got := len(rec.events(id)); got != 2+2*6 {
		t.Fatalf("%d events, want InitStarted, 6 started/completed pairs, InitCompleted", got)
	}
}

// TestExecutorHelloAckShellButSpawnFails: when clawkerd reported a shell,
// a SPAWN_FAILED step is a real failure, not a silent skip.
func TestExecutorHelloAckShellButSpawnFails(t *testing.T) {
	p, _, rec, ex := newExecEnv(t)
	id := dtContainerID(t)
	f := startFake(t, p, &fakeClawkerd{noShell: true}, p.agentLeaf(t, "proj", "dev", id))
	target := InitTarget{ContainerID: id, User: &clawkerdv1.ResolvedUser{Home: "/root"}}
	if err := ex.Run(context.Background(), openStream(t, p, f), target); err == nil {
		t.Fatal("Run succeeded although every shell failed to spawn")
	}
	ff := rec.wait(t, id, EventInitFailed).(InitFailed)
	if ff.FailedStep != StepConfig || ff.Reason != overseer.InitReasonSpawnFailed {
		t.Fatalf("InitFailed = %+v", ff)
	}
	if f.saw("agent-ready-cmd") {
		t.Fatal("plan continued past the failure")
	}
}

func TestTargetFromHelloAck(t *testing.T) {
	base := InitTarget{ContainerID: "c", AgentName: "a", Project: "p"}
	u := &clawkerdv1.ResolvedUser{Uid: 7, Gid: 8, Home: "/h"}
	st := &clawkerdv1.StagedInputs{Paths: []string{"home"}}
	got := TargetFromHelloAck(base, &clawkerdv1.HelloAck{Initialized: true, CmdRunning: true, User: u, NoShell: true, Staged: st})
	if got.ContainerID != "c" || got.AgentName != "a" || got.Project != "p" || !got.Initialized || !got.CmdRunning ||
		got.User != u || !got.NoShell || got.Staged != st {
		t.Fatalf("TargetFromHelloAck = %+v", got)
	}
	// An older clawkerd: no user, so the Executor must probe.
	if got := TargetFromHelloAck(base, &clawkerdv1.HelloAck{}); got.User != nil || got.NoShell || got.Staged != nil {
		t.Fatalf("TargetFromHelloAck(empty) = %+v", got)
	}
}

// TestExecutorSkipsUnstagedSteps: steps whose input HelloAck.staged shows
// absent complete without a command; the events are the full plan's, and
// AgentInitialized is still sent after post-init.
func TestExecutorSkipsUnstagedSteps(t *testing.T) {
	p, _, rec, ex := newExecEnv(t)
	id := dtContainerID(t)
	f := startFake(t, p, &fakeClawkerd{}, p.agentLeaf(t, "proj", "dev", id))
	target := InitTarget{ContainerID: id, User: &clawkerdv1.ResolvedUser{Home: "/root"},
		Staged: &clawkerdv1.StagedInputs{Paths: []string{"home", "hooks", "hooks/pre-run"}}}
	if err := ex.Run(context.Background(), openStream(t, p, f), target); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, id, EventInitCompleted)
	want := []string{StepConfig, "agent-initialized", StepPreRun, "agent-ready-cmd"}
	if got := f.seen(); !reflect.DeepEqual(got, want) {
		t.Fatalf("clawkerd saw %v, want %v", got, want)
	}
	var steps []string
	for _, e := range rec.events(id) {
		switch e := e.(type) {
		case InitStepCompleted:
			steps = append(steps, e.StepName)
			if e.ExitCode != 0 {
				t.Fatalf("skipped step %s completed with exit %d", e.StepName, e.ExitCode)
			}
		case InitStepFailed:
			t.Fatalf("step failed: %+v", e)
		}
	}
	if all := []string{StepConfig, StepGit, StepSSH, StepPostInit, StepPreRun, StepAgentReady}; !reflect.DeepEqual(steps, all) {
		t.Fatalf("completed steps %v, want %v", steps, all)
	}
}
