package admin

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

// The handshake pin and the audit name read the verified chain, never the
// cert the client merely presented.
func TestServerTLSRefusesUnverifiedCLICert(t *testing.T) {
	p := newPKI(t)
	cfg := ServerTLSConfig(p.cp, p.pool)
	presented := tls.ConnectionState{PeerCertificates: []*x509.Certificate{p.cli.Leaf}}
	if err := cfg.VerifyConnection(presented); err == nil {
		t.Fatal("unverified CLI cert accepted")
	}
	verified := presented
	verified.VerifiedChains = [][]*x509.Certificate{{p.cli.Leaf, p.ca.Cert}}
	if err := cfg.VerifyConnection(verified); err != nil {
		t.Fatalf("verified CLI cert refused: %v", err)
	}
}
