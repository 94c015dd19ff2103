package cli

import (
	"os"
	"strings"
	"testing"
)

// TestUnsafeHomeRefused: every command that uses the home refuses one
// other users can write, with the path and the fix, before any work.
func TestUnsafeHomeRefused(t *testing.T) {
	home := initHome(t)
	if err := os.Chmod(home, 0o777); err != nil {
		t.Fatal(err)
	}
	h := &harness{home: home}
	for _, args := range [][]string{{"init"}, {"agents"}, {"exec", "dev", "--", "true"}} {
		_, stderr, code := h.run(t, args...)
		if code == 0 || !strings.Contains(stderr, home) || !strings.Contains(stderr, "chmod go-w") {
			t.Errorf("%v with a world-writable home: exit %d, stderr %q", args, code, stderr)
		}
	}
	if h.dockerCalls != 0 {
		t.Errorf("an unsafe home reached Docker")
	}
}
