package admin

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
)

// An attach carries no command, and a command is not an attach: either
// mix is refused before anything reaches the Execer.
func TestExecAttachStartValidated(t *testing.T) {
	p := newPKI(t)
	fx := &fakeExec{done: make(chan struct{})}
	reg := &fakeRegistry{rows: []agent.Entry{entry(t, idA, "", "alpha")}}
	bus := overseer.New(nil)
	alpha := trustedState(idA, "alpha")
	alpha.Project = ""
	bus.Publish(stateEvent{a: alpha, at: time.Now()})
	waitAgent(t, bus, idA)
	c := dial(t, serve(t, p, newServer(t, reg, bus, nil, fx)), p, p.cli)
	ref := &adminv1.AgentRef{Agent: "alpha"}
	for _, start := range []*adminv1.ExecStart{
		{Agent: ref, Attach: true, Argv: []string{"sh"}},
		{Agent: ref},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		stream, err := c.Exec(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&adminv1.ExecRequest{Payload: &adminv1.ExecRequest_Start{Start: start}}); err != nil {
			t.Fatal(err)
		}
		_, err = stream.Recv()
		cancel()
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("start %v: want InvalidArgument, got %v", start, err)
		}
	}
	fx.mu.Lock()
	defer fx.mu.Unlock()
	if fx.argv != nil {
		t.Fatalf("the Execer was called: argv %v", fx.argv)
	}
}
