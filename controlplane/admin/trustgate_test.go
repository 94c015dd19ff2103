package admin

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/logger"
)

// countingExec records every Exec it is asked for and answers exit 0.
type countingExec struct {
	mu    sync.Mutex
	calls []*adminv1.ExecStart
	err   error
}

func (c *countingExec) Exec(_ context.Context, _ string, start *adminv1.ExecStart) (ExecStream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, start)
	if c.err != nil {
		return nil, c.err
	}
	return doneStream{}, nil
}

func (c *countingExec) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}

type doneStream struct{}

func (doneStream) Recv() ([]byte, bool, int32, error) { return nil, false, 0, io.EOF }
func (doneStream) Resize(uint32, uint32) error        { return nil }
func (doneStream) Stdin([]byte) error                 { return nil }
func (doneStream) CloseStdin() error                  { return nil }
func (doneStream) Signal(int32) error                 { return nil }
func (doneStream) Close() error                       { return nil }

// gateFixture: a CP over real mTLS whose worldview holds one agent per
// trust case, all with registry rows except "norow".
type gateFixture struct {
	client adminv1.AdminServiceClient
	exec   *countingExec
	logs   *logger.SyncBuffer
}

func newGateFixture(t *testing.T, states ...overseer.AgentState) *gateFixture {
	t.Helper()
	bus := overseer.New(nil)
	reg := &fakeRegistry{}
	for _, a := range states {
		bus.Publish(stateEvent{a: a, at: time.Now()})
		waitAgent(t, bus, a.ContainerID)
		if a.AgentName != "norow" {
			reg.rows = append(reg.rows, entry(t, a.ContainerID, a.Project, a.AgentName))
		}
	}
	logs := &logger.SyncBuffer{}
	ex := &countingExec{}
	s, err := New(Deps{Registry: reg, Bus: bus, Exec: ex, Log: logger.New(logs, "info", "admin"),
		Health: func() (bool, map[string]string) { return true, nil }})
	if err != nil {
		t.Fatal(err)
	}
	p := newPKI(t)
	return &gateFixture{client: dial(t, serve(t, p, s), p, p.cli), exec: ex, logs: logs}
}

// run execs argv (with an -e secret and stdin) in ref and returns the
// stream's terminal error (nil on an exit code).
func (f *gateFixture) run(t *testing.T, ref *adminv1.AgentRef, allow bool) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := f.client.Exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Send(&adminv1.ExecRequest{Payload: &adminv1.ExecRequest_Start{Start: &adminv1.ExecStart{
		Agent: ref, Argv: []string{"./deploy.sh"}, Env: map[string]string{"GITHUB_TOKEN": "s3cret"}, AllowUntrusted: allow}}})
	_ = st.Send(&adminv1.ExecRequest{Payload: &adminv1.ExecRequest_Stdin{Stdin: []byte("more secrets")}})
	for {
		r, err := st.Recv()
		if err != nil {
			return err
		}
		if _, ok := r.GetPayload().(*adminv1.ExecResponse_ExitCode); ok {
			return nil
		}
	}
}

func trustedState(id, name string) overseer.AgentState {
	return overseer.AgentState{ContainerID: id, AgentName: name, Project: "web", Session: overseer.SessionStatusConnected,
		Registered: true, Trusted: true, PeerThumbprint: entryThumb(id)}
}

// entryThumb is the thumbprint entry() gives the row of id.
func entryThumb(id string) [32]byte { return sha256.Sum256([]byte(id)) }

// Every way an agent can fall short of "live Session, registry Match, no
// findings" is refused with FailedPrecondition carrying the untrusted
// ErrorInfo, the Execer is never called (no argv, env or stdin leaves the
// CP), and the refusal is logged; a trusted agent is admitted.
func TestExecRefusedUnlessTrusted(t *testing.T) {
	ids := []string{
		strings.Repeat("1", 64), strings.Repeat("2", 64), strings.Repeat("3", 64),
		strings.Repeat("4", 64), strings.Repeat("5", 64), strings.Repeat("6", 64),
	}
	finding := trustedState(ids[1], "finding")
	finding.Trusted, finding.UntrustedReasons = false, []overseer.UntrustedReason{overseer.ReasonChainInvalid}
	closed := trustedState(ids[2], "closed")
	closed.Session = overseer.SessionStatusBroken
	unverified := trustedState(ids[3], "unverified")
	unverified.Trusted = false
	norow := trustedState(ids[4], "norow") // trusted in the worldview, but no registry row
	lying := trustedState(ids[5], "lying") // says trusted, but the live cert is not the row's
	lying.PeerThumbprint = [32]byte{1}
	f := newGateFixture(t, trustedState(ids[0], "good"), finding, closed, unverified, norow, lying)

	for _, c := range []struct{ id, trust string }{
		{ids[1], "no (chain_invalid)"}, {ids[2], "no (session broken)"}, {ids[3], "no (unverified)"},
		{ids[4], "no (unregistered)"}, {ids[5], "no (thumbprint_mismatch)"},
	} {
		err := f.run(t, &adminv1.AgentRef{ContainerId: c.id}, false)
		st := status.Convert(err)
		if st.Code() != codes.FailedPrecondition {
			t.Fatalf("%s: want FailedPrecondition, got %v", c.trust, err)
		}
		var info *errdetails.ErrorInfo
		for _, d := range st.Details() {
			if i, ok := d.(*errdetails.ErrorInfo); ok {
				info = i
			}
		}
		if info == nil || info.GetReason() != adminv1.ErrorReasonUntrusted || info.GetMetadata()["trusted"] != c.trust ||
			!strings.Contains(st.Message(), "is not trusted ("+strings.TrimPrefix(c.trust, "no (")) {
			t.Fatalf("%s: details %v message %q", c.trust, info, st.Message())
		}
	}
	if n := f.exec.n(); n != 0 {
		t.Fatalf("the Execer was called %d times for untrusted agents", n)
	}
	if got := strings.Count(f.logs.String(), `"event":"admin_exec_refused"`); got != 5 {
		t.Fatalf("%d admin_exec_refused lines, want 5:\n%s", got, f.logs.String())
	}
	if strings.Contains(f.logs.String(), "s3cret") {
		t.Fatal("an -e value reached the log")
	}
	if err := f.run(t, &adminv1.AgentRef{Agent: "good", Project: "web"}, false); err != nil {
		t.Fatalf("trusted agent refused: %v", err)
	}
	if f.exec.n() != 1 {
		t.Fatalf("trusted exec: Execer called %d times", f.exec.n())
	}
}

// --allow-untrusted admits an untrusted agent, and the admin_exec audit
// line records it with the trust the agent had.
func TestExecAllowUntrustedIsAudited(t *testing.T) {
	id := strings.Repeat("7", 64)
	st := trustedState(id, "suspect")
	st.Trusted, st.UntrustedReasons = false, []overseer.UntrustedReason{overseer.ReasonIdentityMismatch}
	f := newGateFixture(t, st)
	if err := f.run(t, &adminv1.AgentRef{Agent: "suspect", Project: "web"}, true); err != nil {
		t.Fatalf("allow-untrusted exec refused: %v", err)
	}
	if f.exec.n() != 1 || f.exec.calls[0].GetEnv()["GITHUB_TOKEN"] != "s3cret" {
		t.Fatalf("Execer calls %v", f.exec.calls)
	}
	var audit map[string]any
	for _, line := range strings.Split(f.logs.String(), "\n") {
		if strings.Contains(line, `"event":"admin_exec"`) {
			if err := json.Unmarshal([]byte(line), &audit); err != nil {
				t.Fatal(err)
			}
		}
	}
	if audit["allow_untrusted"] != true || audit["trusted"] != "no (identity_mismatch)" || !strings.HasPrefix(fmt.Sprint(audit["by"]), "clawker-cli") ||
		audit["container_id"] != id {
		t.Fatalf("audit line %v", audit)
	}
}

// A Session the Dialer keeps for observation only refuses Exec even with
// --allow-untrusted, and the CLI gets the same untrusted answer.
func TestExecObservationOnlySessionRefusedEvenWhenAllowed(t *testing.T) {
	id := strings.Repeat("8", 64)
	st := trustedState(id, "impostor")
	st.Trusted, st.UntrustedReasons = false, []overseer.UntrustedReason{overseer.ReasonContainerMismatch}
	f := newGateFixture(t, st)
	f.exec.err = agent.ErrSessionUntrusted
	err := f.run(t, &adminv1.AgentRef{ContainerId: id}, true)
	if s := status.Convert(err); s.Code() != codes.FailedPrecondition || !strings.Contains(s.Message(), "container_mismatch") {
		t.Fatalf("want FailedPrecondition naming container_mismatch, got %v", err)
	}
}

// Names resolve only through registry rows: a live container carrying an
// agent's labels but no row (an impostor after `clawker rm`) is not found
// by name, not even when it is the only one; by full container ID it is
// still found, so it can be contained.
func TestNameResolvesOnlyThroughRegistryRows(t *testing.T) {
	bus := overseer.New(nil)
	bus.Publish(stateEvent{a: overseer.AgentState{ContainerID: idC, AgentName: "alice", Project: "web",
		Session: overseer.SessionStatusConnected}, at: time.Now()})
	waitAgent(t, bus, idC)
	reg := &fakeRegistry{}
	for _, s := range []*Server{newServer(t, reg, bus, nil, nil), newServer(t, scanOnly{reg}, bus, nil, nil)} {
		if a, err := s.resolve(&adminv1.AgentRef{Agent: "alice", Project: "web"}); status.Code(err) != codes.NotFound {
			t.Fatalf("row-less container found by name: %v %v", a, err)
		}
		if a, err := s.resolve(&adminv1.AgentRef{ContainerId: idC}); err != nil || a.GetContainerId() != idC || a.GetRegistered() {
			t.Fatalf("by container ID: %v %v", a, err)
		}
	}
}
