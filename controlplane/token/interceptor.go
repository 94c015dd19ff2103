package token

import (
	"context"
	"crypto/x509"
	"errors"
	"maps"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
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
	a := &authGate{v: v, scopes: maps.Clone(scopes), log: logger.OrNop(log)}
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
	v      *Verifier
	scopes map[string]string
	log    *logger.Logger
}

func (a *authGate) check(ctx context.Context, method string) error {
	p, _ := peer.FromContext(ctx)
	warn := a.log.Warn().Str("method", method)
	if p != nil && p.Addr != nil {
		warn = warn.Str("peer", p.Addr.String())
	}
	want, ok := a.scopes[method]
	if !ok || want == "" {
		warn.Str("event", "auth_method_unmapped").Msg("auth: method has no scope mapping; refused")
		return status.Error(codes.Unauthenticated, msgUnauthenticated)
	}
	raw, ok := bearer(ctx)
	if !ok {
		warn.Str("event", "auth_token_missing").Msg("auth: no bearer token")
		return status.Error(codes.Unauthenticated, msgUnauthenticated)
	}
	claims, err := a.v.Verify(raw, peerLeaf(p))
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
		warn.Str("event", ev).Err(err).Msg("auth: token rejected")
		return status.Error(codes.Unauthenticated, msgUnauthenticated)
	}
	if !claims.HasScope(want) {
		warn.Str("event", "auth_scope_insufficient").Str("want", want).Str("have", claims.Scope).Msg("auth: token lacks scope")
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

func peerLeaf(p *peer.Peer) *x509.Certificate {
	if p == nil {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	return auth.VerifiedLeaf(&ti.State)
}
