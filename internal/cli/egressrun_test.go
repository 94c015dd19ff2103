package cli

import (
	"os"
	"testing"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/egress/egressca"
)

// The interception CA is made once per home, its key private, and a
// second call keeps it (agents already trust it).
func TestEnsureEgressCA(t *testing.T) {
	h := auth.Home{Dir: t.TempDir()}
	if err := EnsureEgressCA(h); err != nil {
		t.Fatal(err)
	}
	first, err := os.ReadFile(h.Path(consts.EgressCAFile))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(h.Path(consts.EgressCAKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode: %v %v", fi, err)
	}
	key, _ := os.ReadFile(h.Path(consts.EgressCAKeyFile))
	if _, err := egressca.LoadCA(first, key); err != nil {
		t.Fatalf("written CA does not load: %v", err)
	}
	if err := EnsureEgressCA(h); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(h.Path(consts.EgressCAFile)); string(again) != string(first) {
		t.Fatal("a second call replaced the CA")
	}
	if err := h.CheckPerms(); err != nil {
		t.Fatalf("home perms: %v", err)
	}
}
