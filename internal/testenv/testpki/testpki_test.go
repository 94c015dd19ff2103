package testpki

import (
	"crypto/x509"
	"testing"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// Every leaf chains to Pool for its role, and a second PKI is a different
// trust domain (tests rely on it for "foreign CA" cases).
func TestLeavesChainToPoolOnly(t *testing.T) {
	const cid = "c0ffee0000000000000000000000000000000000000000000000000000000000"
	p, other := New(t), New(t)
	verify := func(l *auth.Leaf, pool *x509.CertPool, eku x509.ExtKeyUsage) error {
		_, err := l.Cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{eku}})
		return err
	}
	agent := p.AgentNamed(t, "proj", "dev", cid)
	for name, c := range map[string]struct {
		l   *auth.Leaf
		eku x509.ExtKeyUsage
		cn  string
	}{
		"cp":    {p.CP, x509.ExtKeyUsageServerAuth, consts.ControlPlaneCN},
		"cli":   {p.CLI(t), x509.ExtKeyUsageClientAuth, consts.CLICN},
		"agent": {agent, x509.ExtKeyUsageClientAuth, ""},
	} {
		if err := verify(c.l, p.Pool, c.eku); err != nil {
			t.Fatalf("%s: does not chain to its pool: %v", name, err)
		}
		if err := verify(c.l, other.Pool, c.eku); err == nil {
			t.Fatalf("%s: chains to a foreign pool", name)
		}
		if c.cn != "" && c.l.Cert.Subject.CommonName != c.cn {
			t.Fatalf("%s: CN %q, want %q", name, c.l.Cert.Subject.CommonName, c.cn)
		}
		if tc := TLSCert(c.l); tc.Leaf != c.l.Cert || len(tc.Certificate) != 1 || tc.PrivateKey == nil {
			t.Fatalf("%s: TLSCert incomplete", name)
		}
	}
	if id, err := auth.ContainerIDFromCert(agent.Cert); err != nil || id != cid {
		t.Fatalf("agent container id %q, %v", id, err)
	}
}
