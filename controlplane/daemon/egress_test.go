package daemon

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

type forgetLog struct {
	mu  sync.Mutex
	ids []string
}

func (f *forgetLog) Forget(_ context.Context, id string) {
	f.mu.Lock()
	f.ids = append(f.ids, id)
	f.mu.Unlock()
}

func (f *forgetLog) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ids)
}

// An agent's destroy on the bus drops its egress block; other events
// (a stop, a non-agent destroy) do not.
func TestEgressBlockForgottenOnAgentDestroy(t *testing.T) {
	bus := overseer.New(logger.Nop())
	f := &forgetLog{}
	defer forgetDestroyedBlocks(context.Background(), bus, f)()
	agent := map[string]string{consts.LabelPurpose: consts.PurposeAgent}
	bus.Publish(dockerevents.DockerEvent{Action: dockerevents.ActionStop, ContainerID: "stopped", Labels: agent})
	bus.Publish(dockerevents.DockerEvent{Action: dockerevents.ActionDestroy, ContainerID: "not-an-agent"})
	bus.Publish(dockerevents.DockerEvent{Action: dockerevents.ActionDestroy, ContainerID: "c1", Labels: agent})
	bus.Publish(dockerevents.DockerEvent{Action: dockerevents.ActionDestroy, ContainerID: "c2", Labels: agent})
	waitFor(t, "two forgets", func() bool { return len(f.got()) >= 2 })
	if got := f.got(); !slices.Equal(got, []string{"c1", "c2"}) {
		t.Fatalf("forgot %v, want [c1 c2]", got)
	}
}
