package auth

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/clawker/clawker/internal/consts"
)

// An agent pod has no 64-hex container ID of its own: its workload ID is
// derived from the pod UID, so every contract keyed on a container ID (the
// container SAN, the assertion's sub, registry rows) binds that one pod.

// podIDDomain separates pod-derived IDs from any other SHA-256 use.
const podIDDomain = "clawker:pod:"

// ErrNoPodSAN: the cert lacks exactly one urn:clawker:pod: SAN.
var ErrNoPodSAN = errors.New("cert has no single urn:clawker:pod: SAN")

// PodWorkloadID is the 64-hex ID that stands for a pod's container ID.
// The UID is never reused by Kubernetes, so neither is the ID.
func PodWorkloadID(podUID string) string {
	sum := sha256.Sum256([]byte(podIDDomain + podUID))
	return hex.EncodeToString(sum[:])
}

// PodURN returns the pod URI SAN for a pod UID.
func PodURN(podUID string) *url.URL { return urn(consts.PodURNPrefix, podUID) }

// PodUIDFromCert returns the cert's one urn:clawker:pod: SAN, checked
// against the container SAN it must derive: a leaf cannot name one pod
// and bind another.
func PodUIDFromCert(cert *x509.Certificate) (string, error) {
	uid, err := singleURN(cert, consts.PodURNPrefix, ErrNoPodSAN)
	if err != nil {
		return "", err
	}
	if !isPodUID(uid) {
		return "", fmt.Errorf("pod SAN %q: not a pod UID", uid)
	}
	cid, err := ContainerIDFromCert(cert)
	if err != nil {
		return "", err
	}
	if !ConstantTimeEqual(cid, PodWorkloadID(uid)) {
		return "", fmt.Errorf("pod SAN %q does not derive the container SAN", uid)
	}
	return uid, nil
}

// isPodUID accepts the UUID form the API server assigns (RFC 4122 text).
func isPodUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
				return false
			}
		}
	}
	return true
}

// MintAgentPod issues the leaf for an agent pod: the agent SAN, the
// container SAN of the pod's workload ID, and the pod SAN.
func (ca *CA) MintAgentPod(project ProjectSlug, agent AgentName, podUID string, now time.Time) (*Leaf, error) {
	if agent.IsZero() {
		return nil, ErrEmptyAgentName
	}
	if !isPodUID(podUID) {
		return nil, fmt.Errorf("mint agent pod cert: %q is not a pod UID", podUID)
	}
	return ca.mintAgentLeaf(project, agent, now, ContainerURN(PodWorkloadID(podUID)), PodURN(podUID))
}
