package token

import (
	"context"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/clawker/clawker/internal/auth"
)

// JTIChecker is the read-only half of a JTIStore: whether jti was already
// redeemed. Stores that implement it let the token endpoint refuse a
// replay before it pays for a signature check or a Docker call.
type JTIChecker interface {
	Seen(ctx context.Context, jti string) (bool, error)
}

// alreadyRedeemed parses raw without verifying it, only to read its jti,
// and reports whether the store already holds that jti. An unverified jti
// can only make the CP refuse earlier (a forger who copies a redeemed jti
// is refused either way); it never admits anything, and a store error
// falls through to the full check.
func (i *Issuer) alreadyRedeemed(ctx context.Context, raw string) (string, bool) {
	chk, ok := i.jti.(JTIChecker)
	if !ok || raw == "" {
		return "", false
	}
	tok, err := jwt.ParseSigned(raw, allowedAlgs)
	if err != nil {
		return "", false
	}
	var c auth.AssertionClaims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil || c.ID == "" {
		return "", false
	}
	seen, err := chk.Seen(ctx, c.ID)
	if err != nil {
		return "", false
	}
	return c.ID, seen
}

// IssuerStats are the token endpoint's DoS counters, for /metrics.
type IssuerStats struct {
	// ReplaysPrechecked: replays refused by the read-only jti check.
	ReplaysPrechecked uint64
	// RateLimited: requests refused up front, their peer having spent
	// its refusal budget.
	RateLimited uint64
}

// Stats returns the counters.
func (i *Issuer) Stats() IssuerStats {
	return IssuerStats{ReplaysPrechecked: i.prechecked.Load(), RateLimited: i.refusals.RateLimited()}
}

// Seen implements JTIChecker: a redeemed jti that has not yet expired.
func (s *SQLiteJTIStore) Seen(ctx context.Context, jti string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(1) FROM token_jti WHERE jti = ? AND expires_at >= ?`, jti, s.clock().Unix()).Scan(&n)
	return n > 0, err
}

// Seen implements JTIChecker.
func (s *MemoryJTIStore) Seen(_ context.Context, jti string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.seen[jti]
	return ok, nil
}
