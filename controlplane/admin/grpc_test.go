package admin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
	"github.com/clawker/clawker/internal/testenv/testpki"
)

// pki is a CA with the CP's and the CLI's certs, as `clawker init` makes.
type pki struct {
	ca   *auth.CA
	pool *x509.CertPool
	cp   tls.Certificate
	cli  tls.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := testpki.New(t)
	return &pki{ca: p.CA, pool: p.Pool, cp: testpki.TLSCert(p.CP), cli: testpki.TLSCert(p.CLI(t))}
}

// serve runs s on a loopback admin listener wired like the daemon does.
func serve(t *testing.T, p *pki, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u, st := Interceptors(logger.Nop())
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(ServerTLSConfig(p.cp, p.pool))),
		grpc.UnaryInterceptor(u), grpc.StreamInterceptor(st))
	adminv1.RegisterAdminServiceServer(gs, s)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

func dial(t *testing.T, addr string, p *pki, cert tls.Certificate) adminv1.AdminServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: p.pool, ServerName: consts.ControlPlaneCN})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return adminv1.NewAdminServiceClient(conn)
}

func TestAdminPinnedToCLICert(t *testing.T) {
	p := newPKI(t)
	s := newServer(t, &fakeRegistry{}, overseer.New(nil), nil, nil)
	addr := serve(t, p, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, err := dial(t, addr, p, p.cli).Health(ctx, &adminv1.HealthRequest{}); err != nil {
		t.Fatalf("CLI cert refused: %v", err)
	}
	// The CP's own cert (same CA, ClientAuth EKU, wrong CN) and an agent's
	// cert must not get in.
	agentLeaf, err := p.ca.MintAgent(auth.ProjectSlug{}, mustName(t, "a"), idA, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for name, cert := range map[string]tls.Certificate{"cp cert": p.cp, "agent cert": testpki.TLSCert(agentLeaf)} {
		if _, err := dial(t, addr, p, cert).Health(ctx, &adminv1.HealthRequest{}); err == nil {
			t.Errorf("%s admitted to the admin API", name)
		}
	}
	// A CLI cert from another CA fails the chain.
	other := newPKI(t)
	if _, err := dial(t, addr, p, other.cli).Health(ctx, &adminv1.HealthRequest{}); err == nil {
		t.Error("foreign CLI cert admitted")
	}
}

func mustName(t *testing.T, s string) auth.AgentName {
	t.Helper()
	n, err := auth.NewAgentName(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// namedEvent is an agent-axis event for watch tests.
type namedEvent struct {
	Name        string
	ContainerID string
	AgentName   string
	Project     string
	Detail      string
	At          time.Time
}

func (e namedEvent) EventName() string     { return e.Name }
func (e namedEvent) OccurredAt() time.Time { return e.At }
func (e namedEvent) EventSubject() overseer.Subject {
	return overseer.Subject{ContainerID: e.ContainerID, AgentName: e.AgentName, Project: e.Project}
}

func TestWatchEventsSnapshotThenFilteredLiveEvents(t *testing.T) {
	p := newPKI(t)
	bus := overseer.New(nil)
	reg := &fakeRegistry{rows: []agent.Entry{entry(t, idA, "web", "alpha")}}
	bus.Publish(namedEvent{Name: "old", ContainerID: idA, AgentName: "alpha", Project: "web", At: time.Now().Add(-time.Minute)})
	addr := serve(t, p, newServer(t, reg, bus, nil, nil))
	c := dial(t, addr, p, p.cli)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	stream, err := c.WatchEvents(ctx, &adminv1.WatchEventsRequest{Agent: "alpha", Project: "web",
		EventTypes: []string{"old", "wanted"}, SinceUnixNano: time.Now().Add(-time.Hour).UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if snap := first.GetSnapshot(); snap == nil || len(snap.GetAgents()) != 1 || snap.GetAgents()[0].GetContainerId() != idA {
		t.Fatalf("first message is not the snapshot: %v", first)
	}
	replayed, err := stream.Recv()
	if err != nil || replayed.GetEvent().GetName() != "old" {
		t.Fatalf("replay: %v %v", replayed, err)
	}
	// Filtered out: other agent, other type. Then the one that matches.
	bus.Publish(namedEvent{Name: "wanted", ContainerID: idB, AgentName: "beta", Project: "web", At: time.Now()})
	bus.Publish(namedEvent{Name: "noise", ContainerID: idA, AgentName: "alpha", Project: "web", At: time.Now()})
	bus.Publish(namedEvent{Name: "wanted", ContainerID: idA, AgentName: "alpha", Project: "web", Detail: "d1", At: time.Now()})
	live, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	ev := live.GetEvent()
	if ev.GetName() != "wanted" || ev.GetContainerId() != idA || ev.GetAgent() != "alpha" || ev.GetFields()["Detail"] != "d1" {
		t.Fatalf("live event: %v", ev)
	}
}

func TestExecStreamsOutputStdinAndExitCode(t *testing.T) {
	p := newPKI(t)
	fx := &fakeExec{out: [][]byte{[]byte("hello "), []byte("oops")}, oddStderr: true, code: 7, done: make(chan struct{})}
	reg := &fakeRegistry{rows: []agent.Entry{entry(t, idA, "", "alpha")}}
	bus := overseer.New(nil)
	alpha := trustedState(idA, "alpha") // exec needs a trusted agent
	alpha.Project = ""
	bus.Publish(stateEvent{a: alpha, at: time.Now()})
	waitAgent(t, bus, idA)
	addr := serve(t, p, newServer(t, reg, bus, nil, fx))
	c := dial(t, addr, p, p.cli)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := c.Exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(r *adminv1.ExecRequest) {
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	send(&adminv1.ExecRequest{Payload: &adminv1.ExecRequest_Start{Start: &adminv1.ExecStart{
		Agent: &adminv1.AgentRef{Agent: "alpha"}, Argv: []string{"cat"}}}})
	send(&adminv1.ExecRequest{Payload: &adminv1.ExecRequest_Stdin{Stdin: []byte("in")}})
	send(&adminv1.ExecRequest{Payload: &adminv1.ExecRequest_Resize{Resize: &adminv1.ExecResize{Rows: 40, Cols: 120}}})
	send(&adminv1.ExecRequest{Payload: &adminv1.ExecRequest_CloseStdin{CloseStdin: true}})
	var out, errOut []byte
	var code int32 = -100
	var cid string
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch p := r.GetPayload().(type) {
		case *adminv1.ExecResponse_ContainerId:
			cid = p.ContainerId
		case *adminv1.ExecResponse_Output:
			out = append(out, p.Output...)
		case *adminv1.ExecResponse_Stderr:
			errOut = append(errOut, p.Stderr...)
		case *adminv1.ExecResponse_ExitCode:
			code = p.ExitCode
		}
	}
	if cid != idA || string(out) != "hello " || string(errOut) != "oops" || code != 7 {
		t.Fatalf("container %q output %q stderr %q code %d", cid, out, errOut, code)
	}
	fx.mu.Lock()
	defer fx.mu.Unlock()
	if string(fx.stdin) != "in" || len(fx.argv) != 1 || fx.argv[0] != "cat" || len(fx.resized) != 1 || fx.resized[0] != [2]uint32{40, 120} {
		t.Fatalf("stdin %q argv %v resized %v", fx.stdin, fx.argv, fx.resized)
	}
}
