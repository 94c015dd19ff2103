package egress

import (
	"context"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	mobyclient "github.com/moby/moby/client"
)

const listTimeout = 15 * time.Second

// ContainerLister is the Docker call that finds the blocks of containers
// destroyed while the CP was down. The CP's Docker client satisfies it.
type ContainerLister interface {
	ContainerList(ctx context.Context, options mobyclient.ContainerListOptions) (mobyclient.ContainerListResult, error)
}

// Forget drops a destroyed container's egress block, in memory and in the
// state file. Docker never reuses a container ID, so the block could
// never apply again; the daemon calls this on each agent destroy event.
func (s *Service) Forget(ctx context.Context, containerID string) {
	s.mu.Lock()
	blocked := s.blocked[containerID]
	s.mu.Unlock()
	if !blocked {
		return
	}
	if err := s.state.setBlock(context.WithoutCancel(ctx), containerID, false); err != nil {
		// Inert either way (the container is gone); the next start retries.
		s.log.Warn().Str("event", "egress_state_error").Str("container_id", containerID).Err(err).
			Msg("block of a destroyed container not pruned")
		return
	}
	s.mu.Lock()
	delete(s.blocked, containerID)
	s.mu.Unlock()
	s.log.Info().Str("event", "egress_block_pruned").Str("container_id", containerID).Msg("egress block of a destroyed container removed")
}

// pruneGone forgets the restored blocks of containers Docker no longer
// has. It runs in Start, before the gateway serves and before the admin
// API can add a block, so no block newer than the listing is judged by
// it; a listing error keeps every block (never lift one on doubt).
func (s *Service) pruneGone(ctx context.Context) {
	if s.cfg.Containers == nil || len(s.blocked) == 0 {
		return
	}
	// Bounded: a stuck engine must not hold the gateway's start.
	lctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	res, err := s.cfg.Containers.ContainerList(lctx, mobyclient.ContainerListOptions{All: true})
	if err != nil {
		s.log.Warn().Str("event", "egress_block_prune_failed").Err(err).Msg("blocks of destroyed containers kept")
		return
	}
	var gone []string
	for id := range s.blocked {
		if !listed(res.Items, id) {
			gone = append(gone, id)
		}
	}
	for _, id := range gone {
		s.Forget(ctx, id)
	}
}

// listed reports whether id names a listed container; a prefix counts, so
// a short ID is never taken for a destroyed container.
func listed(items []container.Summary, id string) bool {
	for _, c := range items {
		if id != "" && strings.HasPrefix(c.ID, id) {
			return true
		}
	}
	return false
}
