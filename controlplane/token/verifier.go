package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/clawker/clawker/internal/consts"
)

// clockSkew is the leeway applied to exp/nbf/iat on both assertions and
// access tokens.
const clockSkew = 30 * time.Second

// Verification failure classes, for logs only (callers see one generic
// error).
var (
	errMalformed = errors.New("token malformed or unexpected algorithm")
	errSignature = errors.New("token signature invalid")
	errClaims    = errors.New("token claims invalid (exp/nbf/iat/aud/iss)")
	errUnbound   = errors.New("token not bound to the presenting certificate")
)

// Verifier checks CP-issued access tokens.
type Verifier struct {
	key   *ecdsa.PublicKey
	clock func() time.Time
}

// NewVerifier returns a Verifier for tokens signed by the private half of
// key (P-256). clock defaults to time.Now.
func NewVerifier(key *ecdsa.PublicKey, clock func() time.Time) (*Verifier, error) {
	if key == nil || key.Curve != elliptic.P256() {
		return nil, errors.New("token verifier: need a P-256 public key")
	}
	if clock == nil {
		clock = time.Now
	}
	return &Verifier{key: key, clock: clock}, nil
}

// Verify parses raw, checks signature, iss, aud, exp/nbf/iat, and that the
// token is bound to peerCert. Scope is the caller's check.
func (v *Verifier) Verify(raw string, peerCert *x509.Certificate) (*AccessClaims, error) {
	tok, err := jwt.ParseSigned(raw, allowedAlgs)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	var c AccessClaims
	if err := tok.Claims(v.key, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", errSignature, err)
	}
	if err := validateTimes(&c.Claims, v.clock()); err != nil {
		return nil, err
	}
	if err := c.Claims.ValidateWithLeeway(jwt.Expected{
		Issuer:      IssuerName,
		AnyAudience: jwt.Audience{consts.TokenAudience},
		Time:        v.clock(),
	}, clockSkew); err != nil {
		return nil, fmt.Errorf("%w: %v", errClaims, err)
	}
	if peerCert == nil || c.Cnf.X5tS256 == "" ||
		subtle.ConstantTimeCompare([]byte(c.Cnf.X5tS256), []byte(CertThumbprintS256(peerCert))) != 1 {
		return nil, errUnbound
	}
	return &c, nil
}

// validateTimes requires exp and iat, which go-jose treats as optional.
func validateTimes(c *jwt.Claims, now time.Time) error {
	if c.Expiry == nil || c.IssuedAt == nil {
		return fmt.Errorf("%w: exp and iat are required", errClaims)
	}
	if c.IssuedAt.Time().After(now.Add(clockSkew)) {
		return fmt.Errorf("%w: iat in the future", errClaims)
	}
	return nil
}
