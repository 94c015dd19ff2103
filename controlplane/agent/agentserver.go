package agent

import (
	"crypto/tls"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/clawker/clawker/internal/logger"
)

// AgentServerOptions returns the grpc.ServerOptions of the CP agent
// listener in the one order the trust model allows: mTLS (tlsConfig, which
// must require and verify client certs — token.ServerTLSConfig builds it),
// then the token AuthInterceptor (authUnary/authStream), then
// IdentityInterceptor. The auth interceptors are parameters rather than
// built here so this package does not import the token package.
func AgentServerOptions(tlsConfig *tls.Config, authUnary grpc.UnaryServerInterceptor, authStream grpc.StreamServerInterceptor, peerLookup ContainerByPeerIP, log *logger.Logger) ([]grpc.ServerOption, error) {
	if tlsConfig == nil || tlsConfig.ClientAuth != tls.RequireAndVerifyClientCert || tlsConfig.ClientCAs == nil {
		return nil, errors.New("agent listener: TLS config must require and verify client certs against a CA pool")
	}
	if authUnary == nil || authStream == nil {
		return nil, errors.New("agent listener: auth interceptors are required")
	}
	idUnary, idStream, err := IdentityInterceptor(peerLookup, log)
	if err != nil {
		return nil, err
	}
	return []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(tlsConfig)),
		grpc.ChainUnaryInterceptor(authUnary, idUnary),
		grpc.ChainStreamInterceptor(authStream, idStream),
	}, nil
}
