package admin

import (
	"strings"
	"testing"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/overseer"
)

// An agent untrusted because its assertion is spent is told to recreate
// it: nothing the CP or a retry can do brings the assertion back.
func TestUntrustedErrorAssertionSpentSaysRecreate(t *testing.T) {
	ag := &adminv1.Agent{Agent: "dev", Project: "p"}
	if msg := untrustedError(ag, string(overseer.ReasonRegisterAssertionSpent)).Error(); !strings.Contains(msg, "recreate the agent") {
		t.Fatalf("message %q lacks the recreate hint", msg)
	}
	if msg := untrustedError(ag, string(overseer.ReasonRegisterFailed)).Error(); strings.Contains(msg, "recreate") {
		t.Fatalf("register_failed got the spent hint: %q", msg)
	}
}
