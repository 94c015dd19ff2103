package agent

import (
	"crypto/sha256"
	"errors"
	"time"

	"github.com/clawker/clawker/internal/auth"
)

var (
	// ErrUnknownAgent is returned by LookupByContainerID when no entry
	// matches. Thumbprint compare against the live peer cert is the
	// dialer's job, not the registry's.
	ErrUnknownAgent = errors.New("agent registry: unknown agent")
	// ErrMalformedEntry is returned by sqlite reads when a row fails
	// re-validation. The Register handler treats it as "evict + re-write".
	ErrMalformedEntry = errors.New("agent registry: malformed registry row")
)

// Entry is one registered agent.
type Entry struct {
	AgentName    auth.AgentName
	Project      auth.ProjectSlug
	ContainerID  string
	Thumbprint   [sha256.Size]byte
	RegisteredAt time.Time
	LastSeen     time.Time
}

// Registry is the consumer-facing contract of the persisted identity
// registry. See the spec for each method's rules.
type Registry interface {
	Add(entry Entry) error
	LookupByContainerID(containerID string) (*Entry, error)
	EvictByContainerID(containerID string) error
	Snapshot() ([]Entry, error)
}
