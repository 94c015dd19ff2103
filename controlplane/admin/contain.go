package admin

import (
	"context"
	"errors"
	"time"

	mobyclient "github.com/moby/moby/client"
	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/overseer"
)

// ContainerControl is the slice of the Docker client Contain needs;
// *mobyclient.Client satisfies it.
type ContainerControl interface {
	NetworkDisconnect(ctx context.Context, networkID string, options mobyclient.NetworkDisconnectOptions) (mobyclient.NetworkDisconnectResult, error)
	ContainerPause(ctx context.Context, containerID string, options mobyclient.ContainerPauseOptions) (mobyclient.ContainerPauseResult, error)
	ContainerKill(ctx context.Context, containerID string, options mobyclient.ContainerKillOptions) (mobyclient.ContainerKillResult, error)
}

// AgentContained is published after a containment action took effect on
// the engine. Pure audit event: it does not fold into the worldview (the
// Docker events that follow do).
type AgentContained struct {
	overseer.Subject
	Action string
	Reason string
	By     string
	At     time.Time
}

// EventName implements overseer.Event.
func (e AgentContained) EventName() string { return "agent_contained" }

// OccurredAt implements overseer.Event.
func (e AgentContained) OccurredAt() time.Time { return e.At }

// MarshalZerologObject logs the event.
func (e AgentContained) MarshalZerologObject(z *zerolog.Event) {
	e.Subject.MarshalZerologObject(z)
	z.Str("action", e.Action).Str("reason", e.Reason).Str("by", e.By)
}

// Contain detaches, pauses or kills an agent (Deps.Contain). The action, the
// reason and the caller are logged before acting and published after.
func (s *Server) Contain(ctx context.Context, req *adminv1.ContainRequest) (*adminv1.ContainResponse, error) {
	if req.GetAction() == adminv1.ContainAction_CONTAIN_ACTION_UNSPECIFIED {
		return nil, status.Error(codes.InvalidArgument, "choose an action: network-detach, pause, kill, egress-block or egress-unblock")
	}
	ag, err := s.resolve(req.GetAgent())
	if err != nil {
		return nil, err
	}
	action := actionName(req.GetAction())
	id := ag.GetContainerId()
	s.log.Warn().Str("event", "admin_contain").Str("container_id", id).Str("agent", ag.GetAgent()).
		Str("project", ag.GetProject()).Str("action", action).Str("reason", req.GetReason()).
		Str("by", callerCN(ctx)).Msg("containment requested")
	egress := req.GetAction() == adminv1.ContainAction_CONTAIN_ACTION_EGRESS_BLOCK || req.GetAction() == adminv1.ContainAction_CONTAIN_ACTION_EGRESS_UNBLOCK
	if s.d.Contain == nil && !egress {
		return nil, status.Error(codes.Unavailable, "containment unavailable: the control plane has no runtime client")
	}
	target := Target{ContainerID: id, Agent: ag.GetAgent(), Project: ag.GetProject()}
	switch req.GetAction() {
	case adminv1.ContainAction_CONTAIN_ACTION_EGRESS_BLOCK, adminv1.ContainAction_CONTAIN_ACTION_EGRESS_UNBLOCK:
		if err := s.containEgress(ctx, id, req.GetAction() == adminv1.ContainAction_CONTAIN_ACTION_EGRESS_BLOCK); err != nil {
			return nil, err
		}
	case adminv1.ContainAction_CONTAIN_ACTION_NETWORK_DETACH:
		err = s.d.Contain.Detach(ctx, target)
	case adminv1.ContainAction_CONTAIN_ACTION_PAUSE:
		err = s.d.Contain.Pause(ctx, target)
	case adminv1.ContainAction_CONTAIN_ACTION_KILL:
		err = s.d.Contain.Kill(ctx, target)
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unknown action %d", req.GetAction())
	}
	if errors.Is(err, ErrUnsupported) {
		return nil, status.Errorf(codes.FailedPrecondition, "%s %s: %v", action, ag.GetAgent(), err)
	}
	if err != nil {
		s.log.Error().Str("event", "admin_contain_failed").Str("container_id", id).Str("action", action).Err(err).Msg("containment failed")
		return nil, status.Errorf(codes.FailedPrecondition, "%s %s: %v", action, ag.GetAgent(), err)
	}
	s.d.Bus.Publish(AgentContained{Subject: overseer.Subject{ContainerID: id, AgentName: ag.GetAgent(), Project: ag.GetProject()},
		Action: action, Reason: req.GetReason(), By: callerCN(ctx), At: s.d.Clock()})
	return &adminv1.ContainResponse{ContainerId: id}, nil
}

func actionName(a adminv1.ContainAction) string {
	switch a {
	case adminv1.ContainAction_CONTAIN_ACTION_NETWORK_DETACH:
		return "network-detach"
	case adminv1.ContainAction_CONTAIN_ACTION_PAUSE:
		return "pause"
	case adminv1.ContainAction_CONTAIN_ACTION_KILL:
		return "kill"
	case adminv1.ContainAction_CONTAIN_ACTION_EGRESS_BLOCK:
		return "egress-block"
	case adminv1.ContainAction_CONTAIN_ACTION_EGRESS_UNBLOCK:
		return "egress-unblock"
	}
	return "unspecified"
}
