package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/logger"
)

// failingRegistry answers every lookup with an error.
type failingRegistry struct{ agent.Registry }

func (failingRegistry) LookupByContainerID(string) (*agent.Entry, error) {
	return nil, errors.New("registry unreadable")
}

// registryRows lets the token issuer repeat an exchange only for an
// unknown agent: a row, or any doubt, counts as registered.
func TestRegistryRowsForTokenRepeat(t *testing.T) {
	reg := agent.NewRegistry(logger.Nop())
	id := strings.Repeat("ab", 32)
	an, err := auth.NewAgentName("dev")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := auth.NewProjectSlug("web")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rows := registryRows{reg}
	if got, err := rows.Registered(ctx, id); got || err != nil {
		t.Fatalf("unknown agent: registered=%v err=%v", got, err)
	}
	if err := reg.Add(agent.Entry{AgentName: an, Project: ps, ContainerID: id, Thumbprint: [32]byte{1},
		RegisteredAt: time.Now(), LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if got, err := rows.Registered(ctx, id); !got || err != nil {
		t.Fatalf("registered agent: registered=%v err=%v", got, err)
	}
	if got, _ := (registryRows{failingRegistry{reg}}).Registered(ctx, id); !got {
		t.Fatal("a registry that cannot answer must count as registered (no repeat)")
	}
}
