package backoff

import (
	"testing"
	"time"
)

func TestCeilingDoublesToLimit(t *testing.T) {
	base, limit := 5*time.Millisecond, 80*time.Millisecond
	want := []time.Duration{5, 10, 20, 40, 80, 80, 80}
	for i, w := range want {
		if got := Ceiling(base, limit, i+1); got != w*time.Millisecond {
			t.Fatalf("attempt %d: ceiling %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	// Attempt 0 counts as the first; attempt 1000 stays at the limit.
	if got := Ceiling(base, limit, 0); got != base {
		t.Fatalf("attempt 0: %v, want %v", got, base)
	}
	if got := Ceiling(base, limit, 1000); got != limit {
		t.Fatalf("attempt 1000: %v, want %v", got, limit)
	}
}

func TestFullJitterStaysInRangeAndSpreads(t *testing.T) {
	base, limit := 10*time.Millisecond, time.Second
	for attempt := 1; attempt <= 40; attempt++ {
		ceil := Ceiling(base, limit, attempt)
		var lo, hi time.Duration = ceil, 0
		for i := 0; i < 200; i++ {
			d := FullJitter(base, limit, attempt)
			if d < 0 || d > ceil {
				t.Fatalf("attempt %d: %v outside [0, %v]", attempt, d, ceil)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		// Full jitter, not "ceiling minus a little": 200 uniform draws
		// land in both the lower and the upper half of the range.
		if lo >= ceil/2 || hi <= ceil/2 {
			t.Fatalf("attempt %d: draws in [%v, %v] do not spread over [0, %v]", attempt, lo, hi, ceil)
		}
	}
}
