package admin

import (
	"context"
	"testing"
	"time"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/consts"
)

// Every event type published on the bus that is about an agent names it
// through subjected; a type that stops doing so fails to compile here.
var (
	_ subjected = agent.SessionConnecting{}
	_ subjected = agent.SessionConnected{}
	_ subjected = agent.SessionFailed{}
	_ subjected = agent.SessionBroken{}
	_ subjected = agent.SessionClosed{}
	_ subjected = agent.AgentRegistered{}
	_ subjected = agent.AgentUntrusted{}
	_ subjected = agent.InitStarted{}
	_ subjected = agent.InitStepStarted{}
	_ subjected = agent.InitStepCompleted{}
	_ subjected = agent.InitStepFailed{}
	_ subjected = agent.InitCompleted{}
	_ subjected = agent.InitFailed{}
	_ subjected = agent.AgentOOMKilled{}
	_ subjected = AgentContained{}
	_ subjected = dockerevents.DockerEvent{}
)

// subjectEvents builds one event of every agent-axis type about sub.
func subjectEvents(sub overseer.Subject, at time.Time) []overseer.Event {
	return []overseer.Event{
		agent.SessionConnecting{Subject: sub, At: at},
		agent.SessionConnected{Subject: sub, At: at},
		agent.SessionFailed{Subject: sub, At: at},
		agent.SessionBroken{Subject: sub, At: at},
		agent.SessionClosed{Subject: sub, At: at},
		agent.AgentRegistered{Subject: sub, At: at},
		agent.AgentUntrusted{Subject: sub, At: at},
		agent.InitStarted{Subject: sub, At: at},
		agent.InitStepStarted{Subject: sub, At: at},
		agent.InitStepCompleted{Subject: sub, At: at},
		agent.InitStepFailed{Subject: sub, At: at},
		agent.InitCompleted{Subject: sub, At: at},
		agent.InitFailed{Subject: sub, At: at},
		agent.AgentOOMKilled{Subject: sub, At: at},
		AgentContained{Subject: sub, At: at},
		dockerevents.DockerEvent{Action: dockerevents.ActionStart, ContainerID: sub.ContainerID, At: at,
			Labels: map[string]string{consts.LabelAgent: sub.AgentName, consts.LabelProject: sub.Project}},
	}
}

// WatchEvents carries the identity of every event type, filtered by agent
// and project, and never repeats it (or the embedded Subject) in Fields.
func TestWatchEventsCarriesIdentityForEveryEventType(t *testing.T) {
	p := newPKI(t)
	bus := overseer.New(nil)
	at := time.Now()
	sub := overseer.Subject{ContainerID: idA, AgentName: "alpha", Project: "web"}
	want := subjectEvents(sub, at)
	for _, e := range subjectEvents(overseer.Subject{ContainerID: idB, AgentName: "beta", Project: "web"}, at) {
		bus.Publish(e) // another agent's: filtered out
	}
	for _, e := range want {
		bus.Publish(e)
	}
	addr := serve(t, p, newServer(t, &fakeRegistry{}, bus, nil, nil))
	c := dial(t, addr, p, p.cli)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := c.WatchEvents(ctx, &adminv1.WatchEventsRequest{Agent: "alpha", Project: "web",
		SinceUnixNano: at.Add(-time.Minute).UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := stream.Recv(); err != nil || first.GetSnapshot() == nil {
		t.Fatalf("first message is not the snapshot: %v %v", first, err)
	}
	for _, e := range want {
		got, err := stream.Recv()
		if err != nil {
			t.Fatalf("%s: %v", e.EventName(), err)
		}
		ev := got.GetEvent()
		if ev.GetName() != e.EventName() || ev.GetContainerId() != idA || ev.GetAgent() != "alpha" || ev.GetProject() != "web" {
			t.Fatalf("%T lost its identity: %v", e, ev)
		}
		for _, k := range []string{"Subject", "ContainerID", "AgentName", "Project"} {
			if _, ok := ev.GetFields()[k]; ok {
				t.Fatalf("%T repeats %s in fields: %v", e, k, ev.GetFields())
			}
		}
	}
}
