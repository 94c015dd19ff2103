package agent

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// rejectMessage is the one envelope every identity rejection carries, so a
// caller cannot learn which check failed. The reason goes to the log only.
const rejectMessage = "registration rejected"

func errRejected() error { return status.Error(codes.PermissionDenied, rejectMessage) }

// Log events of the identity gate, one per failing stage.
const (
	evIdentityNoPeerCert   = "identity_no_peer_cert"
	evIdentityCNMismatch   = "identity_cn_mismatch"
	evIdentityPeerUnknown  = "identity_peer_unresolved"
	evIdentitySANInvalid   = "identity_san_invalid"
	evIdentitySANMismatch  = "identity_san_mismatch"
	evIdentityPeerResolved = "identity_resolved"
)

// IdentityInterceptor returns paired unary and stream interceptors that run
// the universal identity gate on every RPC: (a) cert CN pinned to
// clawker-clawkerd, (b) kernel-attested peer IP resolved to its container's
// labels, (c) the cert's agent SAN compared to the label-derived
// AgentFullName. On success the resolved container rides on ctx.
func IdentityInterceptor(peerLookup ContainerByPeerIP, log *logger.Logger) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor, error) {
	if peerLookup == nil {
		return nil, nil, errors.New("identity interceptor: nil peer lookup would admit every RPC")
	}
	g := &identityGate{lookup: peerLookup, log: logger.OrNop(log)}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := g.check(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := g.check(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
	}
	return unary, stream, nil
}

type identityGate struct {
	lookup ContainerByPeerIP
	log    *logger.Logger
}

func (g *identityGate) check(ctx context.Context, method string) (context.Context, error) {
	p, _ := peer.FromContext(ctx)
	cert := auth.PeerLeaf(p)
	ip := peerIPFromPeer(p)
	lg := g.log.Warn().Str("method", method).Str("peer_ip", ip.String())
	if cert == nil {
		lg.Str("event", evIdentityNoPeerCert).Msg("identity gate: no verified peer certificate")
		return ctx, errRejected()
	}
	// (a) CN pin.
	if !auth.ConstantTimeEqual(cert.Subject.CommonName, consts.ContainerClawkerd) {
		lg.Str("event", evIdentityCNMismatch).Str("cn", cert.Subject.CommonName).Msg("identity gate: peer CN is not clawkerd")
		return ctx, errRejected()
	}
	// (b) peer IP → container → labels.
	if !ip.IsValid() {
		lg.Str("event", evIdentityPeerUnknown).Msg("identity gate: peer address is not IP")
		return ctx, errRejected()
	}
	resolved, err := g.lookup.LookupByIP(ctx, ip)
	if err != nil {
		lg.Str("event", evIdentityPeerUnknown).Str("reason", lookupReason(err)).Err(err).Msg("identity gate: peer IP did not resolve to an agent container")
		return ctx, errRejected()
	}
	// (c) cert SAN vs label truth.
	claimed, err := auth.AgentFullNameFromCert(cert)
	if err != nil {
		lg.Str("event", evIdentitySANInvalid).Str("container_id", resolved.ContainerID).Err(err).Msg("identity gate: agent SAN missing or malformed")
		return ctx, errRejected()
	}
	want := auth.AgentFullName(resolved.Project, resolved.AgentName)
	if !auth.ConstantTimeEqual(claimed, want) {
		lg.Str("event", evIdentitySANMismatch).Str("container_id", resolved.ContainerID).
			Str("cert_agent", claimed).Str("label_agent", want).Msg("identity gate: cert agent SAN disagrees with container labels")
		return ctx, errRejected()
	}
	g.log.Debug().Str("event", evIdentityPeerResolved).Str("method", method).Str("container_id", resolved.ContainerID).Str("agent", want).Msg("identity gate passed")
	return WithResolvedContainer(ctx, resolved), nil
}

// lookupReason classifies a ContainerByPeerIP error for the log.
func lookupReason(err error) string {
	switch {
	case errors.Is(err, ErrNoContainerForPeerIP):
		return "no_container"
	case errors.Is(err, ErrAmbiguousPeerIP):
		return "ambiguous"
	case errors.Is(err, ErrInvalidAgentLabel):
		return "invalid_label"
	default:
		return "daemon_error"
	}
}

type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }

func peerIPFromPeer(p *peer.Peer) netip.Addr {
	if p == nil || p.Addr == nil {
		return netip.Addr{}
	}
	if ta, ok := p.Addr.(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			return a.Unmap()
		}
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(p.Addr.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
