package auth

import (
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
)

// ConstantTimeEqual compares two identity strings without leaking, through
// timing, how long a matching prefix an attacker has guessed.
func ConstantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// CommonNameIs reports, in constant time, whether cert's subject CN is want.
func CommonNameIs(cert *x509.Certificate, want string) bool {
	return cert != nil && ConstantTimeEqual(cert.Subject.CommonName, want)
}

// VerifiedLeaf returns the leaf of the first chain the TLS stack verified,
// or nil. Only a verified chain counts: PeerCertificates alone is whatever
// the client sent should a listener ever be misconfigured.
func VerifiedLeaf(cs *tls.ConnectionState) *x509.Certificate {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return nil
	}
	return cs.VerifiedChains[0][0]
}
