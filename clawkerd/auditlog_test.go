package clawkerd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/logger"
)

// TestAuditLogOpensInBackgroundWithoutLoss: lines logged before the file
// is open still reach it, and stderr gets every line.
func TestAuditLogOpensInBackgroundWithoutLoss(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "clawkerd.log")
	var stderr logger.SyncBuffer
	log, closeLog := openAuditLog(path, "info", &stderr)
	for _, ev := range []string{"first", "second"} {
		log.Info().Str("event", ev).Msg("m")
	}
	closeLog()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []string{`"event":"first"`, `"event":"second"`} {
		if !strings.Contains(string(b), ev) || !strings.Contains(stderr.String(), ev) {
			t.Fatalf("%s missing: file %q stderr %q", ev, b, stderr.String())
		}
	}
}

// TestAuditLogUnavailableDegradesToStderr: an impossible path costs the
// file only; logging goes on and the reason is logged.
func TestAuditLogUnavailableDegradesToStderr(t *testing.T) {
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr logger.SyncBuffer
	log, closeLog := openAuditLog(filepath.Join(blocker, "sub", "clawkerd.log"), "info", &stderr)
	log.Info().Str("event", "still_logged").Msg("m")
	closeLog()
	eventually(t, 10*time.Second, "audit_log_unavailable warning", func() bool {
		return strings.Contains(stderr.String(), `"event":"audit_log_unavailable"`)
	})
	if !strings.Contains(stderr.String(), `"event":"still_logged"`) {
		t.Fatalf("stderr lost a line: %q", stderr.String())
	}
}
