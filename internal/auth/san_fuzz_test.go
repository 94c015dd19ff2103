package auth

import (
	"crypto/x509"
	"net/url"
	"strings"
	"testing"

	"github.com/clawker/clawker/internal/consts"
)

// FuzzAgentSAN: whatever URI SANs a cert carries, AgentFullNameFromCert
// either refuses them or returns a full name that parses back into valid
// typed parts and recomposes to itself, and it never accepts two claims.
func FuzzAgentSAN(f *testing.F) {
	for _, s := range [][2]string{
		{"urn:clawker:agent:clawker.proj.alpha", ""},
		{"urn:clawker:agent:clawker.alpha", "urn:clawker:container:" + testCID},
		{"urn:clawker:agent:clawker.a.b.c", ""},
		{"urn:clawker:agent:clawker..a", ""},
		{"urn:clawker:agent:Clawker.a", ""},
		{"urn:clawker:agent:clawker.a", "urn:clawker:agent:clawker.b"},
		{"urn:clawker:agent:clawker.a%2Eb", ""},
		{"URN:clawker:agent:clawker.a", ""},
		{"urn:clawker:agent:", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		cert := &x509.Certificate{}
		n := 0
		for _, raw := range []string{a, b} {
			if raw == "" {
				continue
			}
			u, err := url.Parse(raw)
			if err != nil {
				continue
			}
			cert.URIs = append(cert.URIs, u)
			if strings.HasPrefix(u.String(), consts.AgentURNPrefix) {
				n++
			}
		}
		full, err := AgentFullNameFromCert(cert)
		if err != nil {
			return
		}
		if n != 1 {
			t.Fatalf("accepted %d agent SANs: %v", n, cert.URIs)
		}
		p, ag, err := ParseAgentFullName(full)
		if err != nil {
			t.Fatalf("accepted %q that does not parse: %v", full, err)
		}
		if AgentFullName(p, ag) != full {
			t.Fatalf("%q does not recompose (%q)", full, AgentFullName(p, ag))
		}
		if AgentURN(full).String() != consts.AgentURNPrefix+full {
			t.Fatalf("AgentURN(%q) = %q", full, AgentURN(full))
		}
	})
}

// FuzzContainerSAN: an accepted container SAN is always a 64-hex id.
func FuzzContainerSAN(f *testing.F) {
	f.Add("urn:clawker:container:" + testCID)
	f.Add("urn:clawker:container:" + strings.ToUpper(testCID))
	f.Add("urn:clawker:container:abc")
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		id, err := ContainerIDFromCert(&x509.Certificate{URIs: []*url.URL{u}})
		if err == nil && !IsContainerID(id) {
			t.Fatalf("accepted container id %q", id)
		}
	})
}

// FuzzParseAgentFullName: parse ∘ compose is the identity on accepted input.
func FuzzParseAgentFullName(f *testing.F) {
	for _, s := range []string{"clawker.a", "clawker.p.a", "clawker.", "clawker.p.", "clawker.P.a", "x.a", "clawker.a.b.c", "clawker.-a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, a, err := ParseAgentFullName(s)
		if err != nil {
			return
		}
		if a.IsZero() || AgentFullName(p, a) != s {
			t.Fatalf("%q parsed to (%q,%q) which composes to %q", s, p, a, AgentFullName(p, a))
		}
	})
}
