package agent

import (
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"

	"github.com/clawker/clawker/internal/auth"
)

// errDuplicateEntry is wrapped by Add when the entry collides with an
// existing row on container_id or thumbprint. Both registries report it so
// the contract tests can assert the same behaviour; callers only ever see a
// non-nil error (the Register handler maps it to Internal).
var errDuplicateEntry = errors.New("agent registry: duplicate container_id or thumbprint")

// validateEntry enforces the invariants every stored row must satisfy. It is
// applied on write (Add) and, via rowToEntry, on every sqlite read, so a row
// that was hand-edited or written by an older binary can never surface as a
// trusted identity.
func validateEntry(e Entry) error {
	if e.Thumbprint == ([sha256.Size]byte{}) {
		return fmt.Errorf("%w: zero thumbprint", ErrMalformedEntry)
	}
	if !auth.IsContainerID(e.ContainerID) {
		return fmt.Errorf("%w: container_id %q is not a 64-hex id", ErrMalformedEntry, e.ContainerID)
	}
	// Re-run the typed constructors rather than trusting IsZero: an Entry
	// built by a struct literal elsewhere in the package cannot carry an
	// unvalidated string, but a sqlite column can.
	if _, err := auth.NewAgentName(e.AgentName.String()); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformedEntry, err)
	}
	if _, err := auth.NewProjectSlug(e.Project.String()); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformedEntry, err)
	}
	if e.RegisteredAt.IsZero() {
		return fmt.Errorf("%w: zero registered_at", ErrMalformedEntry)
	}
	return nil
}

// normalizeEntry fills the defaults Add applies before storing: LastSeen
// equals RegisteredAt until per-agent RPCs start refreshing it.
func normalizeEntry(e Entry) Entry {
	if e.LastSeen.IsZero() {
		e.LastSeen = e.RegisteredAt
	}
	return e
}

// sortEntries orders by (Project, AgentName), with ContainerID as the final
// tie-break so output is fully deterministic.
func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int {
		return cmp.Or(
			cmp.Compare(a.Project.String(), b.Project.String()),
			cmp.Compare(a.AgentName.String(), b.AgentName.String()),
			cmp.Compare(a.ContainerID, b.ContainerID),
		)
	})
}
