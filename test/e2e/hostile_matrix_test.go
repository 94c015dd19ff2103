package e2e

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"strings"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/testenv/hostile"
)

// hostileAttack is one row of the hostile-peer matrix.
type hostileAttack struct {
	name    string
	surface string // agent-api | token | clawkerd | admin
	from    string // where the attacker runs
	// event is the CP log event that classifies the refusal; "" when the
	// refusal happens in a TLS handshake that no CP code observes.
	event string
	// layer names where an event-less refusal happens (shown in the table).
	layer string
	run   func(name string) outcome
	want  func(outcome) error
}

const (
	genericUnauth   = hostile.GenericUnauth
	genericIdentity = hostile.GenericIdentity
	genericOAuth    = hostile.GenericOAuth
)

var (
	refusedAtTLS = hostile.RefusedAtTLS
	refusedRPC   = hostile.RefusedRPC
	refusedOAuth = hostile.RefusedOAuth
)

// matrix runs attacks and tallies refusals and leaks.
type matrix struct {
	t        *testing.T
	admin    adminv1.AdminServiceClient
	victim   string
	baseline string
	refused  int
	leaked   []string
	odd      []string       // refused, but not in the expected way
	events   map[string]int // expected minimum count per CP log event
	rows     []string
}

func newMatrix(t *testing.T, admin adminv1.AdminServiceClient, victim string) *matrix {
	m := &matrix{t: t, admin: admin, victim: victim, events: map[string]int{}}
	m.rebaseline()
	return m
}

func (m *matrix) rebaseline() { m.baseline = registrySnapshot(m.t, m.admin) }

func (m *matrix) try(a hostileAttack) {
	t := m.t
	t.Helper()
	o := a.run(a.name)
	refusal := a.want(o)
	var leaks []string
	if o.OK {
		leaks = append(leaks, "attack succeeded")
	}
	if snap := registrySnapshot(t, m.admin); snap != m.baseline {
		leaks = append(leaks, fmt.Sprintf("registry changed:\nbefore:\n%s\nafter:\n%s", m.baseline, snap))
	}
	if pathExists(t, m.victim, "/tmp/hostile-"+a.name) {
		leaks = append(leaks, "marker file created in the victim")
	}
	switch {
	case len(leaks) > 0:
		m.leaked = append(m.leaked, a.name)
		t.Errorf("%s (%s from %s) LEAKED: %s; outcome %+v", a.name, a.surface, a.from, strings.Join(leaks, "; "), o)
	case refusal != nil:
		m.odd = append(m.odd, a.name+": "+refusal.Error())
		t.Errorf("%s (%s from %s): refused, but not as expected: %v (%+v)", a.name, a.surface, a.from, refusal, o)
	default:
		m.refused++
	}
	if a.event != "" {
		m.events[a.event]++
	}
	ev := a.event
	switch {
	case ev == "" && a.layer != "":
		ev = a.layer
	case ev == "":
		ev = "(TLS handshake)"
	}
	m.rows = append(m.rows, fmt.Sprintf("%-48s %-9s %-9s %-40s %s", a.name, a.surface, a.from, ev, o))
}

// checkEvents asserts each expected classification is in the CP log at
// least as often as attacks expected it.
func (m *matrix) checkEvents(e *env) {
	t := m.t
	t.Helper()
	r := e.must("cp", "logs")
	logs := r.stdout + r.stderr
	for ev, n := range m.events {
		if got := strings.Count(logs, `"event":"`+ev+`"`); got < n {
			t.Errorf("CP log has %d %q events, want >= %d", got, ev, n)
		}
	}
}

func (m *matrix) report() {
	total := m.refused + len(m.leaked)
	var b strings.Builder
	fmt.Fprintf(&b, "hostile-peer matrix:\n%-48s %-9s %-9s %-40s %s\n", "attack", "surface", "from", "CP log event", "answer")
	for _, r := range m.rows {
		b.WriteString(r + "\n")
	}
	fmt.Fprintf(&b, "%d attacks, %d refused, %d leaked\n", len(m.rows), m.refused, len(m.leaked))
	m.t.Log(b.String())
	fmt.Printf("hostile-peer matrix: %d attacks, %d refused, %d leaked\n", len(m.rows), m.refused, len(m.leaked))
	if total != len(m.rows) || len(m.leaked) != 0 {
		// Repeated here so a truncated CI log still names the rows.
		m.t.Errorf("leaked: %v; refused in an unexpected way: %q", m.leaked, m.odd)
	}
}

// adminAttack calls ListAgents and tries an Exec in victim that would
// create a marker file.
func adminAttack(t *testing.T, c adminv1.AdminServiceClient, name, victim string) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o := outcome{Attack: name, Mode: "admin"}
	_, listErr := c.ListAgents(ctx, &adminv1.ListAgentsRequest{})
	execErr := func() error {
		s, err := c.Exec(ctx)
		if err != nil {
			return err
		}
		if err := s.Send(&adminv1.ExecRequest{Payload: &adminv1.ExecRequest_Start{Start: &adminv1.ExecStart{
			Agent: &adminv1.AgentRef{ContainerId: victim}, Argv: []string{"touch", "/tmp/hostile-" + name},
		}}}); err != nil {
			_, err = s.Recv()
			return err
		}
		_ = s.CloseSend()
		// Read to the end so an admitted command is not cut short.
		for {
			r, err := s.Recv()
			if err != nil {
				return err
			}
			if _, done := r.GetPayload().(*adminv1.ExecResponse_ExitCode); done {
				return nil
			}
		}
	}()
	if listErr == nil || execErr == nil {
		o.OK, o.Stage = true, "rpc"
		return o
	}
	return rpcOutcome(o, listErr)
}

func rpcOutcome(o outcome, err error) outcome {
	st := status.Convert(err)
	o.Code, o.Message, o.Stage = st.Code().String(), st.Message(), "rpc"
	if st.Code() == codes.Unavailable {
		o.Stage = "transport"
	}
	return o
}

func mintAssertionAt(t *testing.T, signer *ecdsa.PrivateKey, containerID string, at time.Time) string {
	t.Helper()
	a, err := auth.MintAssertion(signer, containerID, at)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func containerName(t *testing.T, id string) string {
	t.Helper()
	res, err := suite.docker.ContainerInspect(context.Background(), id, mobyclient.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(res.Container.Name, "/")
}

func mustSlug(t *testing.T, s string) auth.ProjectSlug {
	t.Helper()
	p, err := auth.NewProjectSlug(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustName(t *testing.T, s string) auth.AgentName {
	t.Helper()
	a, err := auth.NewAgentName(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
