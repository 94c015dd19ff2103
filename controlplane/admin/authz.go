package admin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// errDenied is the one message every refused admin caller sees.
var errDenied = status.Error(codes.PermissionDenied, "admin access denied")

// ServerTLSConfig is the admin listener's TLS: the CP cert, client certs
// required and chained to the clawker CA (ClientAuth EKU, Go's default for
// server-side verification), and the peer CN pinned to clawker-cli at the
// handshake, so no other clawker cert (an agent's, the CP's) gets a stream.
func ServerTLSConfig(cert tls.Certificate, clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    clientCAs,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
		VerifyConnection: func(cs tls.ConnectionState) error {
			// Server side, RequireAndVerifyClientCert: VerifiedChains is
			// already set here, and an unverified cert never passes.
			if !auth.CommonNameIs(auth.VerifiedLeaf(&cs), consts.CLICN) {
				return errors.New("admin: client is not the clawker CLI")
			}
			return nil
		},
	}
}

// checkPeer re-checks the CN pin per RPC: defense in depth should the
// listener ever be wired with a TLS config other than ServerTLSConfig.
func checkPeer(ctx context.Context, log *logger.Logger, method string) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		log.Warn().Str("event", "admin_denied").Str("method", method).Str("reason", "no_peer").Msg("admin call refused")
		return errDenied
	}
	leaf := auth.PeerLeaf(p)
	if leaf == nil {
		log.Warn().Str("event", "admin_denied").Str("method", method).Str("reason", "no_verified_cert").Msg("admin call refused")
		return errDenied
	}
	if !auth.CommonNameIs(leaf, consts.CLICN) {
		log.Warn().Str("event", "admin_denied").Str("method", method).Str("reason", "cn_mismatch").
			Str("cn", leaf.Subject.CommonName).Msg("admin call refused")
		return errDenied
	}
	return nil
}

// Interceptors returns the unary and stream interceptors that pin every
// admin RPC to the CLI cert. Register them on the admin grpc.Server.
func Interceptors(log *logger.Logger) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	log = logger.OrNop(log)
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := checkPeer(ctx, log, info.FullMethod); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if err := checkPeer(ss.Context(), log, info.FullMethod); err != nil {
			return err
		}
		return h(srv, ss)
	}
	return unary, stream
}

// callerCN names the caller for audit lines.
func callerCN(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	if leaf := auth.PeerLeaf(p); leaf != nil {
		return leaf.Subject.CommonName + "@" + p.Addr.String()
	}
	return p.Addr.String()
}
