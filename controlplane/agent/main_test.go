package agent

import (
	"os"
	"testing"

	"github.com/clawker/clawker/clawkerd"
)

// TestMain lets the test binary stand in for clawkerd's multi-call git
// credential helper (`<bin> credential get`), which git runs in the
// in-process credential-forwarding test.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "credential" {
		os.Exit(clawkerd.CredentialHelper(os.Args[2:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
	}
	os.Exit(m.Run())
}
