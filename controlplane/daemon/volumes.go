package daemon

import (
	"context"
	"time"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// volumePruner is the one Docker call the clawkerd volume janitor needs.
type volumePruner interface {
	VolumePrune(ctx context.Context, opts mobyclient.VolumePruneOptions) (mobyclient.VolumePruneResult, error)
}

// volumePruneTimeout bounds one prune; the next destroy (or CP start)
// tries again.
const volumePruneTimeout = 30 * time.Second

// clawkerdVolumes removes agents' clawkerd volumes once nothing uses them.
// clawker run gives every agent an anonymous volume holding clawkerd
// (docs/spec-notes.md); clawker rm removes it with the container, but a
// plain `docker rm` leaves it behind, 19 MB a time. Only unused volumes
// labelled dev.clawker.purpose=clawkerd-bin are pruned, so a volume of a
// stopped agent (still referenced) and anything else stay.
//
// Prunes run on one goroutine (run) and coalesce: a burst of destroys
// (a sweep, `docker rm` of many agents) costs one or two prunes, not one
// Docker volume scan each, and never blocks the bus subscriber.
type clawkerdVolumes struct {
	docker volumePruner
	log    *logger.Logger
	ctx    context.Context
	kick   chan struct{} // capacity 1: a pending prune
}

func newClawkerdVolumes(ctx context.Context, docker volumePruner, log *logger.Logger) *clawkerdVolumes {
	return &clawkerdVolumes{docker: docker, log: log, ctx: ctx, kick: make(chan struct{}, 1)}
}

func isAgentDestroy(e overseer.Event) bool {
	d, ok := e.(dockerevents.DockerEvent)
	return ok && d.Action == dockerevents.ActionDestroy && d.IsAgent()
}

// handle asks for a prune after an agent container is destroyed; one
// already pending covers this destroy too.
func (v *clawkerdVolumes) handle(overseer.Event) {
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

// run prunes once at start (leftovers from while the CP was down), then
// once per kick until ctx ends.
func (v *clawkerdVolumes) run() {
	v.prune()
	for {
		select {
		case <-v.ctx.Done():
			return
		case <-v.kick:
			v.prune()
		}
	}
}

// prune removes every unused clawkerd volume, logging what it did; a
// failure is logged and otherwise ignored.
func (v *clawkerdVolumes) prune() {
	ctx, cancel := context.WithTimeout(v.ctx, volumePruneTimeout)
	defer cancel()
	f := make(mobyclient.Filters).Add("label", consts.LabelPurpose+"="+consts.PurposeClawkerdBin)
	res, err := v.docker.VolumePrune(ctx, mobyclient.VolumePruneOptions{Filters: f})
	if err != nil {
		v.log.Warn().Str("event", "clawkerd_volume_prune_failed").Err(err).Msg("unused clawkerd volumes not removed")
		return
	}
	if n := len(res.Report.VolumesDeleted); n > 0 {
		v.log.Info().Str("event", "clawkerd_volumes_pruned").Int("count", n).Strs("volumes", res.Report.VolumesDeleted).
			Msg("unused clawkerd volumes removed")
	}
}
