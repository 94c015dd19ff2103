package admin

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/egress/policy"
	"github.com/clawker/clawker/internal/logger"
)

type fakeEgress struct {
	mu      sync.Mutex
	blocked map[string]bool
	reloads []string
	grants  []overseer.Subject
	// storeErr fails Allow and Block as the gateway does when it cannot
	// persist them.
	storeErr error
}

func (f *fakeEgress) Reload(project string, body []byte, _ string) (policy.Policy, error) {
	f.mu.Lock()
	f.reloads = append(f.reloads, project)
	f.mu.Unlock()
	return policy.Parse(body)
}

func (f *fakeEgress) Allow(sub overseer.Subject, target string, ttl time.Duration, _, _ string) (policy.Grant, error) {
	f.mu.Lock()
	f.grants = append(f.grants, sub)
	f.mu.Unlock()
	if f.storeErr != nil {
		return policy.Grant{}, f.storeErr
	}
	return policy.NewGrantSet(nil).Add(sub.AgentName, target, ttl)
}

func (f *fakeEgress) Block(_ context.Context, id string, b bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.storeErr != nil {
		return f.storeErr
	}
	f.blocked[id] = b
	return nil
}

func egressServer(t *testing.T, eg EgressControl) *Server {
	t.Helper()
	s, err := New(Deps{Registry: &fakeRegistry{rows: []agent.Entry{entry(t, idA, "web", "alpha")}}, Bus: overseer.New(nil),
		Egress: eg, Log: logger.Nop(), Health: func() (bool, map[string]string) { return true, nil }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// egress-block needs no Docker client: it acts in the gateway only, and
// leaves the container (and its Session) alone.
func TestContainEgressBlock(t *testing.T) {
	eg := &fakeEgress{blocked: map[string]bool{}}
	s := egressServer(t, eg)
	ref := &adminv1.AgentRef{Agent: "alpha", Project: "web"}
	for _, tc := range []struct {
		action adminv1.ContainAction
		want   bool
	}{{adminv1.ContainAction_CONTAIN_ACTION_EGRESS_BLOCK, true}, {adminv1.ContainAction_CONTAIN_ACTION_EGRESS_UNBLOCK, false}} {
		res, err := s.Contain(context.Background(), &adminv1.ContainRequest{Agent: ref, Action: tc.action})
		if err != nil || res.GetContainerId() != idA || eg.blocked[idA] != tc.want {
			t.Fatalf("%v: %v %v blocked=%v", tc.action, res, err, eg.blocked[idA])
		}
	}
	if _, err := egressServer(t, nil).Contain(context.Background(), &adminv1.ContainRequest{Agent: ref,
		Action: adminv1.ContainAction_CONTAIN_ACTION_EGRESS_BLOCK}); status.Code(err) != codes.Unavailable {
		t.Fatalf("no gateway: want Unavailable, got %v", err)
	}
}

// A block or grant the gateway could not persist is the CP's failure:
// Internal, one generic message, not InvalidArgument.
func TestEgressStorageFailureIsInternal(t *testing.T) {
	eg := &fakeEgress{blocked: map[string]bool{}, storeErr: fmt.Errorf("grant: %w", policy.ErrNotStored)}
	s := egressServer(t, eg)
	ctx := context.Background()
	ref := &adminv1.AgentRef{Agent: "alpha", Project: "web"}
	if _, err := s.Contain(ctx, &adminv1.ContainRequest{Agent: ref, Action: adminv1.ContainAction_CONTAIN_ACTION_EGRESS_BLOCK}); status.Code(err) != codes.Internal {
		t.Fatalf("block: want Internal, got %v", err)
	}
	if _, err := s.EgressAllow(ctx, &adminv1.EgressAllowRequest{Agent: ref, Target: "x.test", Seconds: 60}); status.Code(err) != codes.Internal {
		t.Fatalf("allow: want Internal, got %v", err)
	}
}

func TestEgressRPCs(t *testing.T) {
	eg := &fakeEgress{blocked: map[string]bool{}}
	s := egressServer(t, eg)
	ctx := context.Background()
	res, err := s.EgressReload(ctx, &adminv1.EgressReloadRequest{Project: "web", PolicyYaml: "defaults: false\nallow: [{host: a.test}]\n"})
	if err != nil || res.GetAllowRules() != 1 || res.GetDefaults() {
		t.Fatalf("reload: %v %v", res, err)
	}
	if _, err := s.EgressReload(ctx, &adminv1.EgressReloadRequest{PolicyYaml: "allow: [{hots: a.test}]\n"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad policy: want InvalidArgument, got %v", err)
	}
	g, err := s.EgressAllow(ctx, &adminv1.EgressAllowRequest{Agent: &adminv1.AgentRef{Agent: "alpha", Project: "web"}, Target: "x.test:443", Seconds: 60})
	if err != nil || g.GetContainerId() != idA || len(eg.grants) != 1 || eg.grants[0].AgentName != "alpha" {
		t.Fatalf("allow: %v %v %v", g, err, eg.grants)
	}
	for name, req := range map[string]*adminv1.EgressAllowRequest{
		"no duration":   {Agent: &adminv1.AgentRef{Agent: "alpha", Project: "web"}, Target: "x.test"},
		"unknown agent": {Agent: &adminv1.AgentRef{Agent: "ghost", Project: "web"}, Target: "x.test", Seconds: 1},
	} {
		if _, err := s.EgressAllow(ctx, req); err == nil {
			t.Errorf("%s: granted", name)
		}
	}
	if _, err := egressServer(t, nil).EgressReload(ctx, &adminv1.EgressReloadRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("no gateway: want Unavailable, got %v", err)
	}
	// No Session in the worldview: not trusted, so no egress.
	if s.Trusted(idA) || s.Trusted(idB) {
		t.Fatal("an agent without a live Session counts as trusted")
	}
}

// Trusted is the exec gate's rule: a live, verified Session and a row.
func TestTrustedForEgress(t *testing.T) {
	bus := overseer.New(nil)
	reg := &fakeRegistry{rows: []agent.Entry{entry(t, idA, "web", "alpha")}}
	a, b := trustedState(idA, "alpha"), trustedState(idB, "beta")
	a.Project, b.Project = "web", "web"
	bus.Publish(stateEvent{a: a, at: time.Now()})
	bus.Publish(stateEvent{a: b, at: time.Now()}) // live and verified, but no registry row
	waitAgent(t, bus, idA)
	waitAgent(t, bus, idB)
	s := newServer(t, reg, bus, nil, nil)
	if !s.Trusted(idA) {
		t.Fatal("a proven agent is not trusted")
	}
	if s.Trusted(idB) || s.Trusted(idA[:12]) {
		t.Fatal("an unregistered agent or a short ID counts as trusted")
	}
}
