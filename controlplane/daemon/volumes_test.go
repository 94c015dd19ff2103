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
}

func (f *fakePruner) VolumePrune(_ context.Context, o mobyclient.VolumePruneOptions) (mobyclient.VolumePruneResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.filters = append(f.filters, o.Filters)
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

// An agent destroy on the bus prunes unused clawkerd-bin volumes, and only
// those: the label filter is the whole safety of the call.
func TestClawkerdVolumesPrunedOnAgentDestroy(t *testing.T) {
	var buf logger.SyncBuffer
	log := logger.New(&buf, "debug", "test")
	f := &fakePruner{deleted: []string{"v1", "v2"}}
	bus := overseer.New(log)
	vols := &clawkerdVolumes{docker: f, log: log, ctx: context.Background()}
	defer bus.Subscribe("clawkerd-volumes", isAgentDestroy, vols.handle)()

	bus.Publish(dockerevents.DockerEvent{Action: dockerevents.ActionDestroy, ContainerID: "c1",
		Labels: map[string]string{consts.LabelPurpose: consts.PurposeAgent}})
	waitFor(t, "a prune after an agent destroy", func() bool { return len(f.calls()) > 0 })
	got := f.calls()
	if len(got) != 1 {
		t.Fatalf("%d prunes, want 1", len(got))
	}
	labels := got[0]["label"]
	if len(got[0]) != 1 || len(labels) != 1 || !labels[consts.LabelPurpose+"="+consts.PurposeClawkerdBin] {
		t.Errorf("prune filters %v, want only label %s=%s", got[0], consts.LabelPurpose, consts.PurposeClawkerdBin)
	}
	waitFor(t, "the clawkerd_volumes_pruned log line", func() bool {
		return strings.Contains(buf.String(), `"event":"clawkerd_volumes_pruned"`)
	})
}

// A failing prune degrades to a log line.
func TestClawkerdVolumePruneFailureIsLogged(t *testing.T) {
	var buf logger.SyncBuffer
	vols := &clawkerdVolumes{docker: &fakePruner{err: errors.New("engine busy")}, log: logger.New(&buf, "debug", "test"), ctx: context.Background()}
	vols.prune()
	if out := buf.String(); !strings.Contains(out, `"event":"clawkerd_volume_prune_failed"`) || !strings.Contains(out, "engine busy") {
		t.Errorf("log %q lacks the failure", out)
	}
}
