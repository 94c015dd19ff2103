package clawkerd

import (
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// errPeerRejected is the one generic refusal; the reason is logged only.
var errPeerRejected = errors.New("peer rejected")

// ServerTLSConfig is the strict Session listener posture: the client must
// present a cert chaining to ca with ClientAuth EKU (crypto/tls enforces
// both), and VerifyConnection pins its CN to the control plane so any other
// clawker identity (an agent, the CLI) is refused during the handshake.
func ServerTLSConfig(cert tls.Certificate, ca *x509.CertPool) *tls.Config {
	return &tls.Config{
		// Same floor as the control plane: nothing on either end of the
		// Session speaks anything older, so a downgrade is refused.
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca,
		// Server side with RequireAndVerifyClientCert, crypto/tls has
		// filled VerifiedChains before this runs (also on resumption).
		VerifyConnection: func(cs tls.ConnectionState) error {
			return checkControlPlanePeer(auth.VerifiedLeaf(&cs))
		},
	}
}

// checkControlPlanePeer is the app-layer identity rule, shared by the TLS
// callback and the Session handler (defence in depth).
func checkControlPlanePeer(leaf *x509.Certificate) error {
	if leaf == nil {
		return errPeerRejected
	}
	if subtle.ConstantTimeCompare([]byte(leaf.Subject.CommonName), []byte(consts.ControlPlaneCN)) != 1 {
		return errPeerRejected
	}
	if !auth.HasEKU(leaf, x509.ExtKeyUsageClientAuth) {
		return errPeerRejected
	}
	return nil
}

// ClientTLSConfig is what clawkerd presents when it calls the CP (token
// endpoint and AgentService): the agent leaf as client cert, and the CP's
// server cert verified against ca for the name clawker-controlplane.
func ClientTLSConfig(cert tls.Certificate, ca *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      ca,
		ServerName:   consts.ControlPlaneCN,
	}
}
