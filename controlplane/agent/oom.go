package agent

import (
	"time"

	"github.com/rs/zerolog"

	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/consts"
)

// EventAgentOOMKilled is the wire name of AgentOOMKilled.
const EventAgentOOMKilled = "agent_oom_killed"

// OOMReason is AgentOOMKilled.Reason: the kernel's OOM killer ended a
// process of the agent for hitting the container's memory limit.
const OOMReason = "oom"

// AgentOOMKilled fires when Docker reports an OOM kill in an agent
// container (its `oom` event). The killed process may be the user
// command or a child of it; the container's own exit follows as die.
// Informational: it has no ApplyTo.
type AgentOOMKilled struct {
	overseer.Subject
	Reason string
	At     time.Time
}

func (e AgentOOMKilled) EventName() string     { return EventAgentOOMKilled }
func (e AgentOOMKilled) OccurredAt() time.Time { return e.At }
func (e AgentOOMKilled) MarshalZerologObject(z *zerolog.Event) {
	e.Subject.MarshalZerologObject(z)
	z.Str("reason", e.Reason)
}

// oomEvent maps Docker's oom event of an agent container to the typed
// event; ok is false for other containers.
func oomEvent(e dockerevents.DockerEvent) (AgentOOMKilled, bool) {
	if e.Action != dockerevents.ActionOOM || !e.IsAgent() {
		return AgentOOMKilled{}, false
	}
	at := e.At
	if at.IsZero() {
		at = time.Now()
	}
	return AgentOOMKilled{Subject: overseer.Subject{ContainerID: e.ContainerID, AgentName: e.Labels[consts.LabelAgent],
		Project: e.Labels[consts.LabelProject]}, Reason: OOMReason, At: at}, true
}
