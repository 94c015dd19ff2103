package auth

import (
	"testing"

	"github.com/clawker/clawker/internal/consts"
)

func TestLabelIdentityDropsInvalidNames(t *testing.T) {
	cases := []struct {
		agent, project, wantA, wantP string
	}{
		{"dev", "web", "dev", "web"},
		{"dev", "", "dev", ""},
		{"dev\x1b]52;c;cHduZWQ=\x07", "web", "", "web"},
		{"dev", "web\x1b[2K", "dev", ""},
		{"Dev Name", "../etc", "", ""},
	}
	for _, c := range cases {
		a, p := LabelIdentity(map[string]string{consts.LabelAgent: c.agent, consts.LabelProject: c.project})
		if a != c.wantA || p != c.wantP {
			t.Errorf("LabelIdentity(%q, %q) = %q, %q; want %q, %q", c.agent, c.project, a, p, c.wantA, c.wantP)
		}
	}
}
