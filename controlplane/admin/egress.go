package admin

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/egress/policy"
)

// EgressControl is the CP's egress gateway as the admin API drives it.
type EgressControl interface {
	Reload(project string, yamlBody []byte, by string) (policy.Policy, error)
	Allow(sub overseer.Subject, target string, ttl time.Duration, by, reason string) (policy.Grant, error)
	Block(ctx context.Context, containerID string, blocked bool) error
}

// Trusted reports whether the CP has proven the agent in containerID: the
// exec gate's rule (adminv1.UntrustedBecause), so egress attribution and
// operator data go only to the same agents.
func (s *Server) Trusted(containerID string) bool {
	a, ok, err := s.lookupID(containerID)
	if !ok || err != nil || a == nil {
		return false
	}
	return adminv1.UntrustedBecause(a) == ""
}

// EgressReload installs a project's egress policy.
func (s *Server) EgressReload(ctx context.Context, req *adminv1.EgressReloadRequest) (*adminv1.EgressReloadResponse, error) {
	if s.d.Egress == nil {
		return nil, status.Error(codes.Unavailable, "egress gateway unavailable")
	}
	p, err := s.d.Egress.Reload(req.GetProject(), []byte(req.GetPolicyYaml()), callerCN(ctx))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "egress policy: %v", err)
	}
	return &adminv1.EgressReloadResponse{AllowRules: uint32(len(p.Allow)), DenyRules: uint32(len(p.Deny)), Defaults: p.DefaultsEnabled()}, nil
}

// EgressAllow grants a timed bypass to one agent.
func (s *Server) EgressAllow(ctx context.Context, req *adminv1.EgressAllowRequest) (*adminv1.EgressAllowResponse, error) {
	if s.d.Egress == nil {
		return nil, status.Error(codes.Unavailable, "egress gateway unavailable")
	}
	if req.GetSeconds() == 0 {
		return nil, status.Error(codes.InvalidArgument, "give a duration (--for)")
	}
	ag, err := s.resolve(req.GetAgent())
	if err != nil {
		return nil, err
	}
	sub := overseer.Subject{ContainerID: ag.GetContainerId(), AgentName: ag.GetAgent(), Project: ag.GetProject()}
	g, err := s.d.Egress.Allow(sub, req.GetTarget(), time.Duration(req.GetSeconds())*time.Second, callerCN(ctx), req.GetReason())
	if errors.Is(err, policy.ErrNotStored) {
		return nil, status.Error(codes.Internal, "egress grant not stored")
	}
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	return &adminv1.EgressAllowResponse{GrantId: g.ID, ContainerId: sub.ContainerID, ExpiresUnixNano: g.Expires.UnixNano()}, nil
}

// containEgress blocks or unblocks an agent's egress at the gateway.
func (s *Server) containEgress(ctx context.Context, id string, block bool) error {
	if s.d.Egress == nil {
		return status.Error(codes.Unavailable, "egress gateway unavailable")
	}
	if err := s.d.Egress.Block(ctx, id, block); err != nil {
		return status.Error(codes.Internal, "egress block not stored")
	}
	return nil
}
