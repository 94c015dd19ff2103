// Package backoff is the one retry schedule the daemons share: exponential
// with full jitter (AWS architecture blog, "Exponential Backoff And
// Jitter"), so retrying peers spread out instead of stampeding together.
package backoff

import (
	"math/rand/v2"
	"time"
)

// FullJitter is attempt's wait: uniform in [0, Ceiling(base, limit, attempt)].
func FullJitter(base, limit time.Duration, attempt int) time.Duration {
	return time.Duration(rand.Int64N(int64(Ceiling(base, limit, attempt)) + 1))
}

// Ceiling is min(limit, base·2^(attempt-1)), the upper bound of attempt's
// jittered wait. The doubling stops at limit, so a large attempt costs no
// more than a few iterations.
func Ceiling(base, limit time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	if d > limit {
		d = limit
	}
	return d
}
