package cli

import (
	"testing"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
)

func TestRegisteredColumn(t *testing.T) {
	for _, c := range []struct {
		ag   *adminv1.Agent
		want string
	}{
		{&adminv1.Agent{}, "no"},
		{&adminv1.Agent{Registered: true, Trusted: true}, "yes"},
		{&adminv1.Agent{Registered: true}, "yes"},
		{&adminv1.Agent{Registered: true, UntrustedReasons: []string{"thumbprint_mismatch"}}, "yes"},
	} {
		if got := registeredCol(c.ag); got != c.want {
			t.Errorf("%+v: %q, want %q", c.ag, got, c.want)
		}
	}
}
