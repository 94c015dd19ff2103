package token

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"slices"
	"strings"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// IssuerName is the iss of every access token.
const IssuerName = "clawker-controlplane"

// allowedAlgs is the only signature algorithm accepted for assertions and
// access tokens. go-jose refuses anything else at parse time, which shuts
// out alg "none", HMAC (the public-key-as-HMAC-secret confusion) and RSA.
var allowedAlgs = []jose.SignatureAlgorithm{jose.ES256}

// Confirmation is the RFC 8705 cnf claim.
type Confirmation struct {
	X5tS256 string `json:"x5t#S256"`
}

// AccessClaims are the claims of a CP-issued access token.
type AccessClaims struct {
	jwt.Claims
	Scope string       `json:"scope"`
	Cnf   Confirmation `json:"cnf"`
}

// HasScope reports whether the space-separated scope claim lists s.
func (c *AccessClaims) HasScope(s string) bool {
	return s != "" && slices.Contains(strings.Fields(c.Scope), s)
}

// CertThumbprintS256 is the RFC 8705 x5t#S256 value of cert: base64url
// (unpadded) SHA-256 of its DER.
func CertThumbprintS256(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
