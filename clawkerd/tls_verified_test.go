package clawkerd

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

// The handshake pin reads the verified chain, never the cert the client
// merely presented: a listener that ever skipped chain verification would
// still refuse even a genuine control-plane cert.
func TestServerTLSRefusesUnverifiedControlPlaneCert(t *testing.T) {
	p := newTestPKI(t)
	cfg := ServerTLSConfig(p.agent, p.pool)
	presented := tls.ConnectionState{PeerCertificates: []*x509.Certificate{p.cp.Leaf}}
	if err := cfg.VerifyConnection(presented); err == nil {
		t.Fatal("unverified control-plane cert accepted")
	}
	verified := presented
	verified.VerifiedChains = [][]*x509.Certificate{{p.cp.Leaf, p.ca.Cert}}
	if err := cfg.VerifyConnection(verified); err != nil {
		t.Fatalf("verified control-plane cert refused: %v", err)
	}
}
