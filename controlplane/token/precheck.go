package token

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/clawker/clawker/internal/auth"
)

// JTIChecker is the read-only half of a JTIStore: whether jti was already
// redeemed, and by which cert. Stores that implement it let the token
// endpoint refuse a replay before it pays for a signature check or a
// Docker call.
type JTIChecker interface {
	Redeemer(ctx context.Context, jti string) (holder string, seen bool, err error)
}

// alreadyRedeemed parses raw without verifying it, only to read its jti,
// and reports whether the store already holds that jti and the request's
// cert (presented, as holderOf) may not repeat the exchange (mayRepeat).
// An unverified jti can only make the CP refuse earlier (a forger who
// copies a redeemed jti is refused either way); it never admits anything,
// and a store error falls through to the full check.
func (i *Issuer) alreadyRedeemed(ctx context.Context, raw, presented string) (string, bool) {
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
	holder, seen, err := chk.Redeemer(ctx, c.ID)
	if err != nil {
		return "", false
	}
	return c.ID, seen && !i.mayRepeat(ctx, holder, presented, c.Subject)
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

// Redeemer implements JTIChecker: a redeemed jti that has not yet
// expired, and its holder.
func (s *SQLiteJTIStore) Redeemer(ctx context.Context, jti string) (string, bool, error) {
	var holder string
	err := s.db.QueryRowContext(ctx, `SELECT holder FROM token_jti WHERE jti = ? AND expires_at >= ?`, jti, s.clock().Unix()).Scan(&holder)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("jti lookup: %w", err)
	}
	return holder, true, nil
}

// Redeemer implements JTIChecker.
func (s *MemoryJTIStore) Redeemer(_ context.Context, jti string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.seen[jti]
	return r.holder, ok, nil
}
