package agent

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/clawker/clawker/api/agent/v1"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/logger"
)

// Log events of the Register handler, one per rejection reason.
const (
	evRegisterNoResolved       = "register_no_resolved_container"
	evRegisterNoPeerCert       = "register_no_peer_cert"
	evRegisterInvalidRequest   = "register_invalid_request"
	evRegisterRequestMismatch  = "register_request_mismatch"
	evRegisterContainerSAN     = "register_container_san_invalid"
	evRegisterContainerMismtch = "register_container_san_mismatch"
	evRegisterReplay           = "register_thumbprint_replay"
	evRegisterMalformedEvicted = "register_malformed_row_evicted"
	evRegisterRegistryError    = "register_registry_error"
	evRegisterIdempotent       = "register_idempotent"
	evRegisterOK               = "agent_registered"
)

// Handler serves AgentService.Register and is the sole writer of the
// registry. See the spec for the full rejection list.
type Handler struct {
	agentv1.UnimplementedAgentServiceServer

	registry Registry
	log      *logger.Logger
	clock    func() time.Time
}

// NewHandler constructs a Register handler. registry is required; log
// defaults to Nop and clock to time.Now.
func NewHandler(registry Registry, log *logger.Logger, clock func() time.Time) (*Handler, error) {
	if registry == nil {
		return nil, errors.New("register handler: nil registry")
	}
	if clock == nil {
		clock = time.Now
	}
	return &Handler{registry: registry, log: logger.OrNop(log), clock: clock}, nil
}

// Register captures the live peer cert's thumbprint, cross-checks the cert
// container SAN and the request body against the interceptor-resolved
// container, and writes the row from the label-derived values.
func (h *Handler) Register(ctx context.Context, req *agentv1.RegisterRequest) (*agentv1.Welcome, error) {
	resolved, ok := ResolvedContainerFromContext(ctx)
	if !ok {
		h.log.Error().Str("event", evRegisterNoResolved).Msg("register: no resolved container on ctx (IdentityInterceptor not chained)")
		return nil, status.Error(codes.Internal, "internal error")
	}
	lg := func(ev string) *zerolog.Event {
		return h.log.Warn().Str("event", ev).Str("container_id", resolved.ContainerID).
			Str("agent", auth.AgentFullName(resolved.Project, resolved.AgentName))
	}
	cert := auth.PeerLeafFromContext(ctx)
	if cert == nil {
		lg(evRegisterNoPeerCert).Msg("register: no verified peer certificate after identity gate")
		return nil, errRejected()
	}
	thumb := auth.Thumbprint(cert)

	reqName, err := auth.NewAgentName(req.GetAgentName())
	if err != nil {
		lg(evRegisterInvalidRequest).Err(err).Msg("register: malformed agent_name")
		return nil, status.Error(codes.InvalidArgument, "invalid request")
	}
	reqProject, err := auth.NewProjectSlug(req.GetProject())
	if err != nil {
		lg(evRegisterInvalidRequest).Err(err).Msg("register: malformed project")
		return nil, status.Error(codes.InvalidArgument, "invalid request")
	}
	if reqName != resolved.AgentName || reqProject != resolved.Project {
		lg(evRegisterRequestMismatch).Str("request_agent", auth.AgentFullName(reqProject, reqName)).
			Msg("register: request body disagrees with container labels")
		return nil, errRejected()
	}
	sanID, err := auth.ContainerIDFromCert(cert)
	if err != nil {
		lg(evRegisterContainerSAN).Err(err).Msg("register: container SAN missing or malformed")
		return nil, errRejected()
	}
	if !auth.ConstantTimeEqual(sanID, resolved.ContainerID) {
		lg(evRegisterContainerMismtch).Str("cert_container_id", sanID).Msg("register: cert container SAN disagrees with peer-IP-resolved container")
		return nil, errRejected()
	}

	existing, err := h.registry.LookupByContainerID(resolved.ContainerID)
	switch {
	case err == nil:
		if existing.Thumbprint == thumb {
			h.log.Info().Str("event", evRegisterIdempotent).Str("container_id", resolved.ContainerID).Msg("register: row already present for this cert")
			return &agentv1.Welcome{}, nil
		}
		lg(evRegisterReplay).Str("thumbprint", auth.ThumbprintHex(thumb)).
			Str("row_thumbprint", auth.ThumbprintHex(existing.Thumbprint)).Msg("register: different cert for an already registered container")
		return nil, errRejected()
	case errors.Is(err, ErrMalformedEntry):
		// The row's identity is unusable; replace it with the identity the
		// gate just established from the live peer.
		if eerr := h.registry.EvictByContainerID(resolved.ContainerID); eerr != nil {
			lg(evRegisterRegistryError).Err(eerr).Msg("register: evicting malformed row failed")
			return nil, status.Error(codes.Internal, "internal error")
		}
		lg(evRegisterMalformedEvicted).Err(err).Msg("register: malformed row evicted; rewriting")
	case errors.Is(err, ErrUnknownAgent):
	default:
		lg(evRegisterRegistryError).Err(err).Msg("register: registry lookup failed")
		return nil, status.Error(codes.Internal, "internal error")
	}

	now := h.clock()
	entry := Entry{
		AgentName:    resolved.AgentName,
		Project:      resolved.Project,
		ContainerID:  resolved.ContainerID,
		Thumbprint:   thumb,
		RegisteredAt: now,
		LastSeen:     now,
	}
	if err := h.registry.Add(entry); err != nil {
		lg(evRegisterRegistryError).Err(err).Msg("register: registry write failed")
		return nil, status.Error(codes.Internal, "internal error")
	}
	h.log.Info().Str("event", evRegisterOK).Str("container_id", resolved.ContainerID).
		Str("agent", auth.AgentFullName(resolved.Project, resolved.AgentName)).
		Str("thumbprint", auth.ThumbprintHex(thumb)).Msg("agent registered")
	return &agentv1.Welcome{}, nil
}
