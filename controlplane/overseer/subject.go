package overseer

import "github.com/rs/zerolog"

// Subject is the agent an event is about. Event types embed it, which
// gives them EventSubject and its log fields, so a consumer reads identity
// through a compiler-checked interface instead of by field name.
// The names are diagnostic (taken from labels or the dial target), never a
// trust gate.
type Subject struct {
	ContainerID string
	AgentName   string
	Project     string
}

// EventSubject is promoted to every event that embeds Subject.
func (s Subject) EventSubject() Subject { return s }

// MarshalZerologObject writes the identity fields of an event's log line.
func (s Subject) MarshalZerologObject(z *zerolog.Event) {
	z.Str("container_id", s.ContainerID).Str("agent", s.AgentName).Str("project", s.Project)
}
