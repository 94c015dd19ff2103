package agent

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/clawker/clawker/controlplane/overseer"
)

// Every event type is a loggable bus event; all but ReapDegraded fold
// into the worldview.
var (
	_ overseer.Applier = SessionConnecting{}
	_ overseer.Applier = SessionConnected{}
	_ overseer.Applier = SessionFailed{}
	_ overseer.Applier = SessionBroken{}
	_ overseer.Applier = SessionClosed{}
	_ overseer.Applier = AgentRegistered{}
	_ overseer.Applier = AgentUntrusted{}
	_ overseer.Applier = InitStarted{}
	_ overseer.Applier = InitStepStarted{}
	_ overseer.Applier = InitStepCompleted{}
	_ overseer.Applier = InitStepFailed{}
	_ overseer.Applier = InitCompleted{}
	_ overseer.Applier = InitFailed{}
	_ overseer.Event   = ReapDegraded{}

	_ zerolog.LogObjectMarshaler = SessionConnected{}
	_ zerolog.LogObjectMarshaler = InitFailed{}
	_ zerolog.LogObjectMarshaler = ReapDegraded{}
)

func TestReapDegradedIsNotApplier(t *testing.T) {
	var e overseer.Event = ReapDegraded{Reason: "x"}
	if _, ok := e.(overseer.Applier); ok {
		t.Fatal("ReapDegraded must be informational only")
	}
}

func TestWorldviewFold(t *testing.T) {
	s := overseer.NewState()
	now := time.Now()
	id := "c1"
	seq := []overseer.Applier{
		SessionConnecting{ContainerID: id, AgentName: "dev", Project: "p", Address: "10.0.0.2:7700", At: now},
		SessionConnected{ContainerID: id, Address: "10.0.0.2:7700", Attempts: 3, PeerAgentFullName: "clawker.p.dev", At: now},
		AgentUntrusted{ContainerID: id, Reason: overseer.ReasonChainInvalid, At: now},
		AgentUntrusted{ContainerID: id, Reason: overseer.ReasonChainInvalid, At: now},
		AgentRegistered{ContainerID: id, Ok: true, At: now},
		InitStarted{ContainerID: id, StepCount: 6, At: now},
		InitStepStarted{ContainerID: id, StepName: StepGit, StepIndex: 2, StepCount: 6, At: now},
		InitStepFailed{ContainerID: id, StepName: StepGit, StepIndex: 2, Detail: "exit code 3", At: now},
		InitFailed{ContainerID: id, FailedStep: StepGit, Detail: "exit code 3", At: now},
	}
	for _, e := range seq {
		e.ApplyTo(s)
	}
	a := s.Agents[id]
	if a.AgentName != "dev" || a.Project != "p" || a.Session != overseer.SessionConnected || a.Attempts != 3 ||
		a.PeerAgentFullName != "clawker.p.dev" || !a.Registered || a.Trusted || len(a.UntrustedReasons) != 1 ||
		a.Init != overseer.InitFailed || a.InitStepName != StepGit || a.InitStepIndex != 2 || a.InitStepCount != 6 ||
		a.LastError != "exit code 3" {
		t.Fatalf("folded state = %+v", a)
	}
	// A new Session re-derives trust; teardown closes without an error.
	SessionConnected{ContainerID: id, Registered: true, At: now}.ApplyTo(s)
	SessionClosed{ContainerID: id, At: now}.ApplyTo(s)
	if a := s.Agents[id]; !a.Trusted || a.UntrustedReasons != nil || a.Session != overseer.SessionClosed || a.LastError != "" {
		t.Fatalf("after reconnect+close = %+v", a)
	}
}

func TestEventLogFields(t *testing.T) {
	var buf bytes.Buffer
	log := zerolog.New(&buf)
	log.Info().EmbedObject(InitFailed{ContainerID: "c1", FailedStep: StepPostInit, ExitCode: 7,
		Reason: overseer.InitReasonNonZeroExit, Detail: "exit code 7"}).Msg("")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m["container_id"] != "c1" || m["failed_step"] != StepPostInit || m["exit_code"] != float64(7) || m["reason"] != "non_zero_exit" {
		t.Fatalf("log fields = %v", m)
	}
}
