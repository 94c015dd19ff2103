package agent

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
		p, a, err := parseAgentLabels(labels)
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

// FuzzRowRevalidation: any stored row either re-validates into an Entry
// that Add would accept, or fails with ErrMalformedEntry.
func FuzzRowRevalidation(f *testing.F) {
	good := testEntry(f, 1, "p", "a")
	f.Add(good.ContainerID, auth.ThumbprintHex(good.Thumbprint), "p", "a", int64(1), int64(1))
	f.Add(good.ContainerID, auth.ThumbprintHex(good.Thumbprint), "", "", int64(1), int64(1))
	f.Add("short", "zz", "P", "a.b", int64(0), int64(-1))
	f.Add(good.ContainerID, strings.ToUpper(auth.ThumbprintHex(good.Thumbprint)), "p", "a", int64(5), int64(0))
	f.Add(good.ContainerID, strings.Repeat("0", 64), "p", "a", int64(5), int64(0))
	f.Fuzz(func(t *testing.T, cid, thumb, project, agent string, reg, seen int64) {
		raw := rawRow{containerID: cid, thumbprint: thumb, project: project, agentName: agent, registeredAt: reg, lastSeen: seen}
		e, err := raw.entry()
		if err != nil {
			if !errors.Is(err, ErrMalformedEntry) {
				t.Fatalf("error %v does not wrap ErrMalformedEntry", err)
			}
			return
		}
		if verr := validateEntry(e); verr != nil {
			t.Fatalf("re-validated row fails validateEntry: %v", verr)
		}
		if e.ContainerID != cid || auth.ThumbprintHex(e.Thumbprint) != thumb || e.AgentName.String() != agent || e.Project.String() != project {
			t.Fatalf("row %+v re-validated into different entry %+v", raw, e)
		}
	})
}
