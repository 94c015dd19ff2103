package token

import (
	"context"
	"errors"
	"maps"
	"strings"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/logger"
)

// Generic envelopes: callers never learn which check failed.
const (
	msgUnauthenticated = "authentication required"
	msgForbidden       = "permission denied"
)

// AuthInterceptor returns paired interceptors that require a valid,
// cert-bound access token carrying the scope scopes maps the RPC's full
// method to. A method absent from scopes is refused (Unauthenticated): a
// new RPC is closed until someone decides what it requires.
func AuthInterceptor(v *Verifier, scopes map[string]string, log *logger.Logger) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor, error) {
	if v == nil {
		return nil, nil, errors.New("auth interceptor: nil verifier would admit every RPC")
	}
	a := &authGate{v: v, scopes: maps.Clone(scopes), log: logger.OrNop(log), refusals: newPeerRefusals()}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := a.check(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := a.check(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
	return unary, stream, nil
}

type authGate struct {
	v        *Verifier
	scopes   map[string]string
	log      *logger.Logger
	refusals *peerRefusals
}

func (a *authGate) check(ctx context.Context, method string) error {
	p, _ := peer.FromContext(ctx)
	peerAddr := ""
	if p != nil && p.Addr != nil {
		peerAddr = p.Addr.String()
	}
	ip := addrIP(peerAddr)
	// refuse logs (throttled per peer and reason) and charges the peer's
	// refusal budget; a peer that spent it is refused before the verify.
	refuse := func(ev string, add func(*zerolog.Event) *zerolog.Event, msg string) {
		a.refusals.charge(ip)
		if ok, n := a.refusals.logAllowed(ev, ip); ok {
			add(a.log.Warn().Str("event", ev).Str("method", method).Str("peer", peerAddr).Uint64("suppressed", n)).Msg(msg)
		}
	}
	none := func(e *zerolog.Event) *zerolog.Event { return e }
	if a.refusals.exhausted(ip) {
		if ok, n := a.refusals.logAllowed("auth_refusal_rate_limited", ip); ok {
			a.log.Warn().Str("event", "auth_refusal_rate_limited").Str("method", method).Str("peer", peerAddr).
				Uint64("suppressed", n).Msg("auth: peer exceeded its refusal budget")
		}
		return status.Error(codes.Unauthenticated, msgUnauthenticated)
	}
	want, ok := a.scopes[method]
	if !ok || want == "" {
		refuse("auth_method_unmapped", none, "auth: method has no scope mapping; refused")
		return status.Error(codes.Unauthenticated, msgUnauthenticated)
	}
	raw, ok := bearer(ctx)
	if !ok {
		refuse("auth_token_missing", none, "auth: no bearer token")
		return status.Error(codes.Unauthenticated, msgUnauthenticated)
	}
	claims, err := a.v.Verify(raw, auth.PeerLeaf(p))
	if err != nil {
		ev := "auth_token_invalid"
		switch {
		case errors.Is(err, errUnbound):
			ev = "auth_token_unbound"
		case errors.Is(err, errClaims):
			ev = "auth_token_claims_invalid"
		case errors.Is(err, errSignature), errors.Is(err, errMalformed):
			ev = "auth_token_forged"
		}
		refuse(ev, func(e *zerolog.Event) *zerolog.Event { return e.Err(err) }, "auth: token rejected")
		return status.Error(codes.Unauthenticated, msgUnauthenticated)
	}
	if !claims.HasScope(want) {
		refuse("auth_scope_insufficient", func(e *zerolog.Event) *zerolog.Event {
			return e.Str("want", want).Str("have", claims.Scope)
		}, "auth: token lacks scope")
		return status.Error(codes.PermissionDenied, msgForbidden)
	}
	return nil
}

// bearer extracts the one "authorization: Bearer <token>" value.
func bearer(ctx context.Context) (string, bool) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return "", false
	}
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return "", false
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}
