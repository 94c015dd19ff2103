package agent_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/clawker/clawker/controlplane/token"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// forgeAccessToken signs a well-formed, correctly bound access token with
// a key the CP never held.
func forgeAccessToken(t *testing.T, leaf *auth.Leaf, now time.Time) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signAccessToken(t, k, leaf, now)
}

// signAccessToken signs a register-scoped access token bound to leaf.
func signAccessToken(t *testing.T, k *ecdsa.PrivateKey, leaf *auth.Leaf, now time.Time) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(s).Claims(token.AccessClaims{
		Claims: jwt.Claims{
			Issuer: token.IssuerName, Audience: jwt.Audience{consts.TokenAudience},
			IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute)),
		},
		Scope: consts.ScopeRegister,
		Cnf:   token.Confirmation{X5tS256: token.CertThumbprintS256(leaf.Cert)},
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
