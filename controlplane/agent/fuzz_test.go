package agent

import (
	"errors"
	"strings"
	"testing"

	"github.com/clawker/clawker/internal/auth"
)

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
