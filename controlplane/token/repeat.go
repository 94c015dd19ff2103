package token

import (
	"context"
	"crypto/x509"

	"github.com/clawker/clawker/internal/auth"
)

// Registrations is what the issuer needs of the agent registry: whether a
// container has a row. A lookup error must answer true (no repeat).
type Registrations interface {
	Registered(ctx context.Context, containerID string) (bool, error)
}

// holderOf names the cert that redeems a jti, as the jti store keeps it.
func holderOf(cert *x509.Certificate) string { return auth.ThumbprintHex(auth.Thumbprint(cert)) }

// mayRepeat reports whether a redeemed assertion may be exchanged again:
// only by the cert that redeemed it (prior, as holderOf; presented is the
// requester's), and only while its container has no registry row. A CP
// killed between burning the jti and writing the token back leaves the
// agent holding an assertion it cannot otherwise use; whoever can repeat
// it already holds that agent's key at its address, and the token is
// bound to the same cert. Once the agent is registered the assertion is
// spent for good.
func (i *Issuer) mayRepeat(ctx context.Context, prior, presented, containerID string) bool {
	if i.registrations == nil || prior == "" || prior != presented {
		return false
	}
	registered, err := i.registrations.Registered(ctx, containerID)
	return err == nil && !registered
}
