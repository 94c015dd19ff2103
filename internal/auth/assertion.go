package auth

import (
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/clawker/clawker/internal/consts"
)

// AssertionLifetime bounds how long after `clawker run` a container may
// first register. Short, because the assertion sits in the container's
// writable layer; long enough for a CP that is briefly down at agent start.
const AssertionLifetime = time.Hour

// AssertionIssuer is the iss of every client assertion (the CLI).
const AssertionIssuer = "clawker-cli"

// AssertionClaims are the RFC 7523 client-assertion claims clawker uses.
// Subject is the container ID the assertion was minted for.
type AssertionClaims struct {
	jwt.Claims
	ContainerID string `json:"container_id"`
}

// MintAssertion signs a single-use client assertion (ES256) naming the
// container it was minted for.
func MintAssertion(key *ecdsa.PrivateKey, containerID string, now time.Time) (string, error) {
	if !IsContainerID(containerID) {
		return "", fmt.Errorf("mint assertion: %q is not a 64-hex container id", containerID)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("assertion signer: %w", err)
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("assertion jti: %w", err)
	}
	c := AssertionClaims{
		Claims: jwt.Claims{
			Issuer:    AssertionIssuer,
			Subject:   containerID,
			Audience:  jwt.Audience{consts.AssertionAudience},
			ID:        hex.EncodeToString(jti),
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
			Expiry:    jwt.NewNumericDate(now.Add(AssertionLifetime)),
		},
		ContainerID: containerID,
	}
	tok, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		return "", fmt.Errorf("sign assertion: %w", err)
	}
	return tok, nil
}
