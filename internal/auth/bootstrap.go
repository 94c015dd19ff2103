package auth

import (
	"crypto/ecdsa"
	"fmt"
	"time"
)

// Bootstrap is an agent's identity files: its leaf cert and key, the CA,
// and the single-use registration assertion for its workload ID.
type Bootstrap struct {
	Cert, Key, CA []byte
	Assertion     string
}

// MintBootstrap signs the assertion for workloadID (the container ID, or
// a pod's PodWorkloadID) and bundles it with leaf.
func (ca *CA) MintBootstrap(signer *ecdsa.PrivateKey, leaf *Leaf, workloadID string, now time.Time) (Bootstrap, error) {
	assertion, err := MintAssertion(signer, workloadID, now)
	if err != nil {
		return Bootstrap{}, fmt.Errorf("mint registration assertion: %w", err)
	}
	keyPEM, err := KeyPEM(leaf.Key)
	if err != nil {
		return Bootstrap{}, err
	}
	return Bootstrap{Cert: CertPEM(leaf.Cert), Key: keyPEM, CA: CertPEM(ca.Cert), Assertion: assertion}, nil
}
