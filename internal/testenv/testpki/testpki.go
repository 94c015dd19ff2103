// Package testpki is the throwaway clawker PKI unit tests share: a fresh
// CA, its pool and the control-plane leaf, plus minting helpers, so each
// test package stops rebuilding the same few lines. Test support only.
package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/auth"
)

// PKI is one CA with the control plane's leaf minted at creation.
type PKI struct {
	CA   *auth.CA
	Pool *x509.CertPool // trusts CA alone
	CP   *auth.Leaf     // clawker-controlplane, no extra SANs
}

// New builds a PKI valid from now.
func New(t testing.TB) *PKI { return NewAt(t, time.Now()) }

// NewAt builds a PKI whose CA and CP leaf are minted at now.
func NewAt(t testing.TB, now time.Time) *PKI {
	t.Helper()
	ca, err := auth.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := ca.MintControlPlane(nil, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	return &PKI{CA: ca, Pool: Pool(ca), CP: cp}
}

// Pool is a cert pool trusting ca alone.
func Pool(ca *auth.CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// CLI mints a clawker-cli leaf.
func (p *PKI) CLI(t testing.TB) *auth.Leaf {
	t.Helper()
	l, err := p.CA.MintCLI(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Agent mints an agent leaf for the given identity at now.
func (p *PKI) Agent(t testing.TB, project auth.ProjectSlug, agent auth.AgentName, containerID string, now time.Time) *auth.Leaf {
	t.Helper()
	l, err := p.CA.MintAgent(project, agent, containerID, now)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// AgentNamed is Agent from unvalidated names ("" project = none), minted now.
func (p *PKI) AgentNamed(t testing.TB, project, agent, containerID string) *auth.Leaf {
	t.Helper()
	a, err := auth.NewAgentName(agent)
	if err != nil {
		t.Fatal(err)
	}
	var ps auth.ProjectSlug
	if project != "" {
		if ps, err = auth.NewProjectSlug(project); err != nil {
			t.Fatal(err)
		}
	}
	return p.Agent(t, ps, a, containerID, time.Now())
}

// TLSCert is l as a tls.Certificate, with Leaf set.
func TLSCert(l *auth.Leaf) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{l.Cert.Raw}, PrivateKey: l.Key, Leaf: l.Cert}
}
