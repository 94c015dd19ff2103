package daemon

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/moby/moby/api/types/volume"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

type fakePruner struct {
	mu      sync.Mutex
	filters []mobyclient.Filters
	deleted []string
	err     error
	hold    chan struct{} // when set, the first prune waits for it to close
}

func (f *fakePruner) VolumePrune(_ context.Context, o mobyclient.VolumePruneOptions) (mobyclient.VolumePruneResult, error) {
	f.mu.Lock()
	first := len(f.filters) == 0
	f.filters = append(f.filters, o.Filters)
	f.mu.Unlock()
	if first && f.hold != nil {
		<-f.hold
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if o.All {
		return mobyclient.VolumePruneResult{}, errors.New("all must stay false: named volumes are not ours to prune")
	}
	return mobyclient.VolumePruneResult{Report: volume.PruneReport{VolumesDeleted: f.deleted}}, f.err
}

func (f *fakePruner) calls() []mobyclient.Filters {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]mobyclient.Filters(nil), f.filters...)
}

func TestIsAgentDestroy(t *testing.T) {
	agentLabels := map[string]string{consts.LabelPurpose: consts.PurposeAgent}
	for _, tc := range []struct {
		e    overseer.Event
		want bool
	}{
		{dockerevents.DockerEvent{Action: dockerevents.ActionDestroy, Labels: agentLabels}, true},
		{dockerevents.DockerEvent{Action: dockerevents.ActionDestroy, Labels: map[string]string{consts.LabelPurpose: consts.PurposeControlPlane}}, false},
		{dockerevents.DockerEvent{Action: dockerevents.ActionDestroy}, false},
		{dockerevents.DockerEvent{Action: dockerevents.ActionDie, Labels: agentLabels}, false},
	} {
		if got := isAgentDestroy(tc.e); got != tc.want {
			t.Errorf("isAgentDestroy(%+v) = %v, want %v", tc.e, got, tc.want)
		}
	}
}

// runVolumes starts the janitor's loop; stop ends it and waits (it also
// runs at the end of t).
func runVolumes(t *testing.T, f *fakePruner, log *logger.Logger) (vols *clawkerdVolumes, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	vols = newClawkerdVolumes(ctx, f, log)
	done := make(chan struct{})
	go func() {
		defer close(done)
		vols.run()
	}()
	stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return vols, stop
}

// At start and after an agent destroy on the bus, the janitor prunes
// unused clawkerd-bin volumes, and only those: the label filter is the
// whole safety of the call.
func TestClawkerdVolumesPrunedOnAgentDestroy(t *testing.T) {
	var buf logger.SyncBuffer
	log := logger.New(&buf, "debug", "test")
	f := &fakePruner{deleted: []string{"v1", "v2"}}
	bus := overseer.New(log)
	vols, _ := runVolumes(t, f, log)
	defer bus.Subscribe("clawkerd-volumes", isAgentDestroy, vols.handle)()
	waitFor(t, "the start-up prune", func() bool { return len(f.calls()) == 1 })

	bus.Publish(dockerevents.DockerEvent{Action: dockerevents.ActionDestroy, ContainerID: "c1",
		Labels: map[string]string{consts.LabelPurpose: consts.PurposeAgent}})
	waitFor(t, "a prune after an agent destroy", func() bool { return len(f.calls()) == 2 })
	for i, got := range f.calls() {
		labels := got["label"]
		if len(got) != 1 || len(labels) != 1 || !labels[consts.LabelPurpose+"="+consts.PurposeClawkerdBin] {
			t.Errorf("prune %d filters %v, want only label %s=%s", i, got, consts.LabelPurpose, consts.PurposeClawkerdBin)
		}
	}
	waitFor(t, "the clawkerd_volumes_pruned log line", func() bool {
		return strings.Contains(buf.String(), `"event":"clawkerd_volumes_pruned"`)
	})
}

// Destroys that arrive while a prune runs cost one more prune in all.
func TestClawkerdVolumePrunesCoalesce(t *testing.T) {
	f := &fakePruner{hold: make(chan struct{})}
	vols, stop := runVolumes(t, f, logger.Nop())
	waitFor(t, "the start-up prune to begin", func() bool { return len(f.calls()) == 1 })
	for range 50 {
		vols.handle(dockerevents.DockerEvent{Action: dockerevents.ActionDestroy})
	}
	close(f.hold)
	waitFor(t, "the coalesced prune", func() bool { return len(f.calls()) == 2 })
	stop()
	if n := len(f.calls()); n != 2 {
		t.Errorf("%d prunes for a start and 50 destroys during it, want 2", n)
	}
}

// A failing prune degrades to a log line.
func TestClawkerdVolumePruneFailureIsLogged(t *testing.T) {
	var buf logger.SyncBuffer
	vols := newClawkerdVolumes(context.Background(), &fakePruner{err: errors.New("engine busy")}, logger.New(&buf, "debug", "test"))
	vols.prune()
	if out := buf.String(); !strings.Contains(out, `"event":"clawkerd_volume_prune_failed"`) || !strings.Contains(out, "engine busy") {
		t.Errorf("log %q lacks the failure", out)
	}
}
