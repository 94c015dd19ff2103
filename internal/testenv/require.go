package testenv

import (
	"testing"

	"github.com/clawker/clawker/internal/consts"
)

// Unavailable skips t for a missing prerequisite, except in CI
// (CLAWKER_E2E=1), where a skipped engine test would hide a gap: there it
// fails.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if Required() {
		t.Fatalf("required with %s=1: "+format, append([]any{consts.EnvE2E}, args...)...)
	}
	t.Skipf(format, args...)
}
