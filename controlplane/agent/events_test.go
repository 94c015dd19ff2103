package agent

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/clawker/clawker/controlplane/dockerevents"
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
		SessionConnecting{Subject: overseer.Subject{ContainerID: id, AgentName: "dev", Project: "p"}, Address: "10.0.0.2:7700", At: now},
		SessionConnected{Subject: overseer.Subject{ContainerID: id}, Address: "10.0.0.2:7700", Attempts: 3, PeerAgentFullName: "clawker.p.dev", At: now},
		AgentUntrusted{Subject: overseer.Subject{ContainerID: id}, Reason: overseer.ReasonChainInvalid, At: now},
		AgentUntrusted{Subject: overseer.Subject{ContainerID: id}, Reason: overseer.ReasonChainInvalid, At: now},
		AgentRegistered{Subject: overseer.Subject{ContainerID: id}, Ok: true, At: now},
		InitStarted{Subject: overseer.Subject{ContainerID: id}, StepCount: 6, At: now},
		InitStepStarted{Subject: overseer.Subject{ContainerID: id}, StepName: StepGit, StepIndex: 2, StepCount: 6, At: now},
		InitStepFailed{Subject: overseer.Subject{ContainerID: id}, StepName: StepGit, StepIndex: 2, Detail: "exit code 3", At: now},
		InitFailed{Subject: overseer.Subject{ContainerID: id}, FailedStep: StepGit, Detail: "exit code 3", At: now},
	}
	for _, e := range seq {
		e.ApplyTo(s)
	}
	a := s.Agents[id]
	if a.AgentName != "dev" || a.Project != "p" || a.Session != overseer.SessionStatusConnected || a.Attempts != 3 ||
		a.PeerAgentFullName != "clawker.p.dev" || !a.Registered || a.Trusted || len(a.UntrustedReasons) != 1 ||
		a.Init != overseer.InitStatusFailed || a.InitStepName != StepGit || a.InitStepIndex != 2 || a.InitStepCount != 6 ||
		a.LastError != "exit code 3" {
		t.Fatalf("folded state = %+v", a)
	}
	// A new Session re-derives trust; teardown closes without an error
	// and withdraws it.
	SessionConnected{Subject: overseer.Subject{ContainerID: id}, Registered: true, Trusted: true, At: now}.ApplyTo(s)
	if a := s.Agents[id]; !a.Trusted || a.UntrustedReasons != nil {
		t.Fatalf("after clean Match reconnect = %+v", a)
	}
	SessionClosed{Subject: overseer.Subject{ContainerID: id}, At: now}.ApplyTo(s)
	if a := s.Agents[id]; a.Trusted || a.Session != overseer.SessionStatusClosed || a.LastError != "" {
		t.Fatalf("after close = %+v", a)
	}
}

// Trust is only ever established positively and findings are sticky for
// the Session.
func TestWorldviewTrustFailsClosed(t *testing.T) {
	now := time.Now()
	const id = "c1"
	trusted := func(seq ...overseer.Applier) (*overseer.AgentState, bool) {
		s := overseer.NewState()
		for _, e := range seq {
			e.ApplyTo(s)
		}
		a := s.Agents[id]
		return a, a != nil && a.Trusted
	}
	connecting := SessionConnecting{Subject: overseer.Subject{ContainerID: id}, At: now}
	cases := []struct {
		name string
		seq  []overseer.Applier
		want bool
	}{
		{"connecting only", []overseer.Applier{connecting}, false},
		{"connected, no verdict", []overseer.Applier{connecting, SessionConnected{Subject: overseer.Subject{ContainerID: id}, Registered: true, At: now}}, false},
		{"clean Match", []overseer.Applier{connecting, SessionConnected{Subject: overseer.Subject{ContainerID: id}, Registered: true, Trusted: true, At: now}}, true},
		{"Miss then Register ok", []overseer.Applier{connecting, SessionConnected{Subject: overseer.Subject{ContainerID: id}, At: now},
			AgentRegistered{Subject: overseer.Subject{ContainerID: id}, Ok: true, At: now}}, true},
		{"finding then Register ok", []overseer.Applier{connecting, SessionConnected{Subject: overseer.Subject{ContainerID: id}, At: now},
			AgentUntrusted{Subject: overseer.Subject{ContainerID: id}, Reason: overseer.ReasonCNMismatch, At: now},
			AgentRegistered{Subject: overseer.Subject{ContainerID: id}, Ok: true, At: now}}, false},
		{"Register failed", []overseer.Applier{connecting, SessionConnected{Subject: overseer.Subject{ContainerID: id}, At: now},
			AgentRegistered{Subject: overseer.Subject{ContainerID: id}, Ok: false, Reason: "x", At: now}}, false},
		{"Register ok after Session broke", []overseer.Applier{connecting, SessionConnected{Subject: overseer.Subject{ContainerID: id}, At: now},
			SessionBroken{Subject: overseer.Subject{ContainerID: id}, At: now}, AgentRegistered{Subject: overseer.Subject{ContainerID: id}, Ok: true, At: now}}, false},
		{"untrusted after trusted", []overseer.Applier{connecting, SessionConnected{Subject: overseer.Subject{ContainerID: id}, Registered: true, Trusted: true, At: now},
			AgentUntrusted{Subject: overseer.Subject{ContainerID: id}, Reason: overseer.ReasonRegistryError, At: now}}, false},
		{"trusted then broken", []overseer.Applier{connecting, SessionConnected{Subject: overseer.Subject{ContainerID: id}, Registered: true, Trusted: true, At: now},
			SessionBroken{Subject: overseer.Subject{ContainerID: id}, Reason: "eof", At: now}}, false},
	}
	for _, tc := range cases {
		if a, got := trusted(tc.seq...); got != tc.want {
			t.Errorf("%s: trusted = %v, want %v (%+v)", tc.name, got, tc.want, a)
		}
	}
}

// `docker rm -f` emits kill, die, destroy; the destroy drops the row and
// the cancelled Session's events land after it. None may resurrect it.
func TestWorldviewDestroyLeavesNoGhost(t *testing.T) {
	bus := overseer.New(nil)
	now := time.Now()
	const id = "c1"
	bus.Publish(SessionConnecting{Subject: overseer.Subject{ContainerID: id, AgentName: "dev"}, At: now})
	bus.Publish(SessionConnected{Subject: overseer.Subject{ContainerID: id}, Registered: true, Trusted: true, At: now})
	bus.Publish(InitStarted{Subject: overseer.Subject{ContainerID: id}, StepCount: 3, At: now})
	for _, act := range []string{dockerevents.ActionKill, dockerevents.ActionDie, dockerevents.ActionDestroy} {
		bus.Publish(dockerevents.DockerEvent{ContainerID: id, Action: act, At: now})
	}
	for _, e := range []overseer.Event{
		// A dial attempt that raced the destroy (seen in the churn soak).
		SessionConnecting{Subject: overseer.Subject{ContainerID: id, AgentName: "dev"}, At: now},
		SessionConnected{Subject: overseer.Subject{ContainerID: id}, Registered: true, Trusted: true, At: now},
		SessionClosed{Subject: overseer.Subject{ContainerID: id}, Reason: "cancelled", At: now},
		SessionBroken{Subject: overseer.Subject{ContainerID: id}, Reason: "eof", At: now},
		SessionFailed{Subject: overseer.Subject{ContainerID: id}, Reason: "container_not_running", At: now},
		AgentRegistered{Subject: overseer.Subject{ContainerID: id}, Ok: false, At: now},
		AgentUntrusted{Subject: overseer.Subject{ContainerID: id}, Reason: overseer.ReasonRegisterFailed, At: now},
		InitStepStarted{Subject: overseer.Subject{ContainerID: id}, StepName: StepGit, At: now},
		InitStepCompleted{Subject: overseer.Subject{ContainerID: id}, StepName: StepGit, At: now},
		InitStepFailed{Subject: overseer.Subject{ContainerID: id}, Reason: overseer.InitReasonCancelled, At: now},
		InitFailed{Subject: overseer.Subject{ContainerID: id}, Reason: overseer.InitReasonCancelled, At: now},
		InitCompleted{Subject: overseer.Subject{ContainerID: id}, At: now},
	} {
		bus.Publish(e)
	}
	if a, ok := bus.Agent(id); ok {
		t.Fatalf("destroyed container resurrected in the worldview: %+v", a)
	}
}

func TestEventLogFields(t *testing.T) {
	var buf bytes.Buffer
	log := zerolog.New(&buf)
	log.Info().EmbedObject(InitFailed{Subject: overseer.Subject{ContainerID: "c1"}, FailedStep: StepPostInit, ExitCode: 7,
		Reason: overseer.InitReasonNonZeroExit, Detail: "exit code 7"}).Msg("")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m["container_id"] != "c1" || m["failed_step"] != StepPostInit || m["exit_code"] != float64(7) || m["reason"] != "non_zero_exit" {
		t.Fatalf("log fields = %v", m)
	}
}
