package auth

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/clawker/clawker/internal/consts"
)

// Thumbprint is the SHA-256 over a leaf cert's DER.
func Thumbprint(cert *x509.Certificate) [sha256.Size]byte {
	return sha256.Sum256(cert.Raw)
}

// ThumbprintHex renders a thumbprint as lowercase hex.
func ThumbprintHex(t [sha256.Size]byte) string { return hex.EncodeToString(t[:]) }

var (
	// ErrNoAgentSAN / ErrNoContainerSAN: the cert lacks exactly one such URI SAN.
	ErrNoAgentSAN     = errors.New("cert has no single urn:clawker:agent: SAN")
	ErrNoContainerSAN = errors.New("cert has no single urn:clawker:container: SAN")
)

// AgentURN returns the agent URI SAN for an AgentFullName.
func AgentURN(fullName string) *url.URL { return urn(consts.AgentURNPrefix, fullName) }

// ContainerURN returns the container URI SAN for a 64-hex container ID.
func ContainerURN(containerID string) *url.URL { return urn(consts.ContainerURNPrefix, containerID) }

// urn is the URI SAN prefix+value ("urn:" + opaque part).
func urn(prefix, value string) *url.URL {
	return &url.URL{Scheme: "urn", Opaque: strings.TrimPrefix(prefix, "urn:") + value}
}

// AgentFullNameFromCert returns the AgentFullName claimed by the cert's one
// urn:clawker:agent: SAN, validated. Two such SANs are refused: a cert must
// not be able to claim two identities.
func AgentFullNameFromCert(cert *x509.Certificate) (string, error) {
	v, err := singleURN(cert, consts.AgentURNPrefix, ErrNoAgentSAN)
	if err != nil {
		return "", err
	}
	if _, _, err := ParseAgentFullName(v); err != nil {
		return "", fmt.Errorf("agent SAN: %w", err)
	}
	return v, nil
}

// ContainerIDFromCert returns the cert's one urn:clawker:container: SAN value.
func ContainerIDFromCert(cert *x509.Certificate) (string, error) {
	v, err := singleURN(cert, consts.ContainerURNPrefix, ErrNoContainerSAN)
	if err != nil {
		return "", err
	}
	if !IsContainerID(v) {
		return "", fmt.Errorf("container SAN %q: not a 64-hex container id", v)
	}
	return v, nil
}

func singleURN(cert *x509.Certificate, prefix string, missing error) (string, error) {
	if cert == nil {
		return "", missing
	}
	found := ""
	n := 0
	for _, u := range cert.URIs {
		if u == nil {
			continue
		}
		if v, ok := strings.CutPrefix(u.String(), prefix); ok {
			found = v
			n++
		}
	}
	if n != 1 {
		return "", missing
	}
	return found, nil
}

// IsContainerID reports whether s is a full 64-hex lowercase container ID.
func IsContainerID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}
