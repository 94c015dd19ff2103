package token

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/clawker/clawker/internal/auth"
)

// ServerTLSConfig is the TLS posture of both CP agent-facing listeners (the
// token endpoint and AgentService): a client cert is required and must
// chain to caPool. Go's server-side verification checks the ClientAuth EKU
// by default (VerifyOptions.KeyUsages), so a server-only cert is refused
// during the handshake.
func ServerTLSConfig(cert tls.Certificate, caPool *x509.CertPool) (*tls.Config, error) {
	if caPool == nil {
		return nil, errors.New("server tls: nil CA pool")
	}
	if len(cert.Certificate) == 0 {
		return nil, errors.New("server tls: no server certificate")
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    caPool,
	}, nil
}

func readPublicKeyFile(path string) (crypto.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read assertion public key: %w", err)
	}
	k, err := auth.ParsePublicKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("parse assertion public key %s: %w", path, err)
	}
	return k, nil
}
