package peerid

import (
	"errors"
	"strings"
	"testing"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// FuzzParseAgentLabels: any label set either yields a valid typed identity
// whose AgentFullName round-trips, or ErrInvalidAgentLabel — never a panic
// and never an identity the auth package would refuse.
func FuzzParseAgentLabels(f *testing.F) {
	for _, s := range [][3]string{
		{"alpha", "proj", "11"}, {"alpha", "", "10"}, {"", "proj", "11"}, {"a.b", "", "10"},
		{"Alpha", "p", "11"}, {"-x", "p", "11"}, {"a", "p.q", "11"}, {strings.Repeat("a", 64), "", "10"},
		{"a\x00", "", "10"}, {"agent", "", "00"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, agent, project, present string) {
		labels := map[string]string{}
		if len(present) > 0 && present[0] == '1' {
			labels[consts.LabelAgent] = agent
		}
		if len(present) > 1 && present[1] == '1' {
			labels[consts.LabelProject] = project
		}
		p, a, err := ParseAgentLabels(labels)
		if err != nil {
			if !errors.Is(err, ErrInvalidAgentLabel) {
				t.Fatalf("error %v does not wrap ErrInvalidAgentLabel", err)
			}
			return
		}
		if a.IsZero() || a.String() != labels[consts.LabelAgent] || p.String() != labels[consts.LabelProject] {
			t.Fatalf("parsed (%q,%q) from %v", p, a, labels)
		}
		gp, ga, err := auth.ParseAgentFullName(auth.AgentFullName(p, a))
		if err != nil || gp != p || ga != a {
			t.Fatalf("AgentFullName round trip of (%q,%q): (%q,%q,%v)", p, a, gp, ga, err)
		}
	})
}
