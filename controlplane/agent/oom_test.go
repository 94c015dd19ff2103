package agent

import (
	"context"
	"testing"

	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/consts"
)

// TestOOMEventSurfaces: Docker's oom event of an agent becomes a typed
// AgentOOMKilled with reason oom; a non-agent container's does not.
func TestOOMEventSurfaces(t *testing.T) {
	env := newDTEnv(t, nil)
	cleanup, err := Start(context.Background(), startDeps(env, &fakeLister{}, &fakePeerLookup{}))
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	got := make(chan AgentOOMKilled, 4)
	defer env.bus.Subscribe("oom-recorder", func(e overseer.Event) bool { return e.EventName() == EventAgentOOMKilled },
		func(e overseer.Event) { got <- e.(AgentOOMKilled) })()

	env.bus.Publish(dockerevents.DockerEvent{Action: dockerevents.ActionOOM, ContainerID: "other", Labels: map[string]string{}})
	env.bus.Publish(agentEvent(dockerevents.ActionOOM, "c1", consts.LabelProject, "web"))
	var e AgentOOMKilled
	dtWait(t, "AgentOOMKilled", func() bool {
		select {
		case e = <-got:
			return true
		default:
			return false
		}
	})
	if e.ContainerID != "c1" || e.AgentName != "dev" || e.Project != "web" || e.Reason != OOMReason || e.At.IsZero() {
		t.Fatalf("event %+v", e)
	}
	if _, ok := oomEvent(dockerevents.DockerEvent{Action: dockerevents.ActionOOM, Labels: map[string]string{}}); ok {
		t.Fatal("non-agent oom mapped")
	}
}
