package dockerevents

import (
	"time"

	"github.com/rs/zerolog"

	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// EventName is the bus name of DockerEvent.
const EventName = "docker_event"

// Container actions subscribers branch on. They are the Docker action
// strings; Synthesized events use the same vocabulary.
const (
	ActionCreate  = "create"
	ActionStart   = "start"
	ActionRestart = "restart"
	ActionUnpause = "unpause"
	ActionPause   = "pause"
	ActionStop    = "stop"
	ActionDie     = "die"
	ActionKill    = "kill"
	ActionOOM     = "oom"
	ActionDestroy = "destroy"
)

// DockerEvent is one container event from the Docker daemon, or one
// synthesized by the reconcile after a reconnect (Synthesized=true).
// Labels holds the event actor's attributes: the container's labels plus
// Docker's own keys (name, image, and exitCode on die, signal on kill);
// synthesized events carry the labels only.
// Delivery is at-least-once: a reconnect may both replay and synthesize
// the same transition, so consumers must be idempotent.
type DockerEvent struct {
	Action      string
	ContainerID string
	Labels      map[string]string
	At          time.Time
	Synthesized bool
}

// EventName implements overseer.Event.
func (e DockerEvent) EventName() string { return EventName }

// OccurredAt implements overseer.Event.
func (e DockerEvent) OccurredAt() time.Time { return e.At }

// IsAgent reports whether the container carries purpose=agent.
func (e DockerEvent) IsAgent() bool { return e.Labels[consts.LabelPurpose] == consts.PurposeAgent }

// EventSubject names the container and, when its labels are valid names,
// the agent and project (only valid names leave the CP).
func (e DockerEvent) EventSubject() overseer.Subject {
	agent, project := auth.LabelIdentity(e.Labels)
	return overseer.Subject{ContainerID: e.ContainerID, AgentName: agent, Project: project}
}

// ApplyTo drops a destroyed container from the worldview: its Session is
// gone and its registry row is evicted, so nothing about it is live.
func (e DockerEvent) ApplyTo(s *overseer.State) {
	if e.Action == ActionDestroy {
		s.Forget(e.ContainerID)
	}
}

// MarshalZerologObject logs the event.
func (e DockerEvent) MarshalZerologObject(z *zerolog.Event) {
	z.Str("action", e.Action).Str("container_id", e.ContainerID).
		Str("agent", e.Labels[consts.LabelAgent]).Str("project", e.Labels[consts.LabelProject]).
		Bool("synthesized", e.Synthesized)
}
