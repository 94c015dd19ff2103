package agent

import (
	"fmt"
	"sync"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/logger"
)

// memoryRegistry is the in-memory Registry: tests, and a CP run without a
// data directory. It mirrors the sqlite constraints (UNIQUE container_id,
// UNIQUE thumbprint) so both pass one contract suite.
type memoryRegistry struct {
	log *logger.Logger

	mu   sync.RWMutex
	byID map[string]Entry
}

// NewRegistry constructs an empty in-memory registry. A nil log is replaced
// by logger.Nop().
func NewRegistry(log *logger.Logger) Registry {
	return &memoryRegistry{log: logger.OrNop(log), byID: make(map[string]Entry)}
}

func (r *memoryRegistry) Add(entry Entry) error {
	if err := validateEntry(entry); err != nil {
		return fmt.Errorf("registry add: %w", err)
	}
	entry = normalizeEntry(entry)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.byID[entry.ContainerID]; ok {
		return fmt.Errorf("registry add %s: %w", entry.ContainerID, errDuplicateEntry)
	}
	for _, e := range r.byID {
		if e.Thumbprint == entry.Thumbprint {
			return fmt.Errorf("registry add %s: %w", entry.ContainerID, errDuplicateEntry)
		}
	}
	r.byID[entry.ContainerID] = entry
	r.log.Info().Str("event", "registry_add").Str("container_id", entry.ContainerID).
		Str("agent", auth.AgentFullName(entry.Project, entry.AgentName)).
		Str("thumbprint", auth.ThumbprintHex(entry.Thumbprint)).Msg("registry row added")
	return nil
}

func (r *memoryRegistry) LookupByContainerID(containerID string) (*Entry, error) {
	r.mu.RLock()
	e, ok := r.byID[containerID]
	r.mu.RUnlock()
	if !ok {
		return nil, ErrUnknownAgent
	}
	return &e, nil
}

func (r *memoryRegistry) EvictByContainerID(containerID string) error {
	r.mu.Lock()
	_, ok := r.byID[containerID]
	delete(r.byID, containerID)
	r.mu.Unlock()
	if ok {
		r.log.Info().Str("event", "registry_evict").Str("container_id", containerID).Msg("registry row evicted")
	}
	return nil
}

func (r *memoryRegistry) Snapshot() ([]Entry, error) {
	r.mu.RLock()
	out := make([]Entry, 0, len(r.byID))
	for _, e := range r.byID {
		out = append(out, e)
	}
	r.mu.RUnlock()
	sortEntries(out)
	return out, nil
}
