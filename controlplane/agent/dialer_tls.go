package agent

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"

	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// peerIdentity is what the permissive verifier recorded about the
// clawkerd leaf of one handshake. Nothing in it ever fails a dial.
type peerIdentity struct {
	present       bool
	chainErr      error // nil = chains to the clawker CA for ServerAuth
	cn            string
	agentFullName string // from the urn:clawker:agent: SAN ("" if absent/bad)
	containerID   string // from the urn:clawker:container: SAN
	thumbprint    [sha256.Size]byte
}

// peerRecorder captures the peer identity of one attempt's handshake.
type peerRecorder struct {
	mu sync.Mutex
	id peerIdentity
}

func (r *peerRecorder) get() peerIdentity {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.id
}

// clientTLS builds the permissive client config for one attempt: the CP
// presents its cert, skips Go's built-in verification, and records the
// chain/identity outcome instead. The CP must be able to reach an agent
// whose cert is bad exactly when it needs to contain it.
func clientTLS(cert tls.Certificate, caPool *x509.CertPool, rec *peerRecorder) *tls.Config {
	return &tls.Config{
		Certificates:       []tls.Certificate{cert},
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, //nolint:gosec // permissive by design; outcomes recorded below
		VerifyConnection: func(cs tls.ConnectionState) error {
			id := inspectPeer(cs.PeerCertificates, caPool)
			rec.mu.Lock()
			rec.id = id
			rec.mu.Unlock()
			return nil
		},
	}
}

func inspectPeer(chain []*x509.Certificate, caPool *x509.CertPool) peerIdentity {
	if len(chain) == 0 {
		return peerIdentity{chainErr: errors.New("no peer certificate")}
	}
	leaf := chain[0]
	id := peerIdentity{present: true, cn: leaf.Subject.CommonName, thumbprint: auth.Thumbprint(leaf)}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if caPool == nil {
		id.chainErr = errors.New("no CA pool configured")
	} else if _, err := leaf.Verify(x509.VerifyOptions{Roots: caPool, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		id.chainErr = err
	}
	if name, err := auth.AgentFullNameFromCert(leaf); err == nil {
		id.agentFullName = name
	}
	if cid, err := auth.ContainerIDFromCert(leaf); err == nil {
		id.containerID = cid
	}
	return id
}

// trustFinding is one AgentUntrusted outcome derived from the handshake.
type trustFinding struct {
	reason overseer.UntrustedReason
	detail string
}

// assessPeer compares the recorded identity with the Docker-grounded
// target (labels are ground truth, the cert is a claim).
func assessPeer(id peerIdentity, containerID, agentName, project string) []trustFinding {
	var out []trustFinding
	if !id.present || id.chainErr != nil {
		detail := "no peer certificate"
		if id.chainErr != nil {
			detail = id.chainErr.Error()
		}
		out = append(out, trustFinding{overseer.ReasonChainInvalid, detail})
	}
	if !id.present {
		return out
	}
	if subtle.ConstantTimeCompare([]byte(id.cn), []byte(consts.ContainerClawkerd)) != 1 {
		out = append(out, trustFinding{overseer.ReasonCNMismatch, fmt.Sprintf("peer CN %q", id.cn)})
	}
	want := ""
	if a, err := auth.NewAgentName(agentName); err == nil {
		p, perr := auth.NewProjectSlug(project)
		if perr == nil {
			want = auth.AgentFullName(p, a)
		}
	}
	switch {
	case want == "":
		out = append(out, trustFinding{overseer.ReasonIdentityMismatch, "container labels carry no valid agent identity"})
	case subtle.ConstantTimeCompare([]byte(id.agentFullName), []byte(want)) != 1:
		out = append(out, trustFinding{overseer.ReasonIdentityMismatch,
			fmt.Sprintf("cert agent SAN %q, labels say %q", id.agentFullName, want)})
	}
	if subtle.ConstantTimeCompare([]byte(id.containerID), []byte(containerID)) != 1 {
		out = append(out, trustFinding{overseer.ReasonContainerMismatch,
			fmt.Sprintf("cert container SAN %q does not name this container", id.containerID)})
	}
	return out
}
