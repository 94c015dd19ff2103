package agent

import (
	"time"

	"github.com/rs/zerolog"
)

// ReapDegraded fires when the startup reap of orphan registry rows fails.
// Informational: it has no ApplyTo.
type ReapDegraded struct {
	Reason string
	At     time.Time
}

func (e ReapDegraded) EventName() string                     { return EventReapDegraded }
func (e ReapDegraded) OccurredAt() time.Time                 { return e.At }
func (e ReapDegraded) MarshalZerologObject(z *zerolog.Event) { z.Str("reason", e.Reason) }
