package clawkerd

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/logger"
	"github.com/clawker/clawker/internal/testenv/testpki"
)

const testContainerID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// testPKI is a throwaway CA with the leaves the tests need.
type testPKI struct {
	ca    *auth.CA
	pool  *x509.CertPool
	agent tls.Certificate
	cp    tls.Certificate
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	p := testpki.New(t)
	agent := p.AgentNamed(t, "", "dev", testContainerID)
	return &testPKI{ca: p.CA, pool: p.Pool, agent: testpki.TLSCert(agent), cp: testpki.TLSCert(p.CP)}
}

type testServer struct {
	srv     *Server
	addr    string
	pki     *testPKI
	console *logger.SyncBuffer
	serveCh chan error
	cancel  context.CancelFunc
}

// startServer runs a real Server on loopback TLS. mutate adjusts the Config.
func startServer(t testing.TB, mutate func(*Config)) *testServer {
	t.Helper()
	return startServerPKI(t, newTestPKI(t), mutate)
}

func startServerPKI(t testing.TB, pki *testPKI, mutate func(*Config)) *testServer {
	t.Helper()
	console := &logger.SyncBuffer{}
	cfg := Config{
		Cert: pki.agent, CAPool: pki.pool, AgentName: "dev",
		InitMarkerPath: t.TempDir() + "/initialized",
		Console:        console,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := NewServer(cfg, logger.Nop())
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{srv: srv, addr: lis.Addr().String(), pki: pki, console: console, serveCh: make(chan error, 1), cancel: cancel}
	go func() { ts.serveCh <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ts.serveCh:
		case <-time.After(15 * time.Second):
			t.Errorf("Serve did not return")
		}
	})
	return ts
}

func (ts *testServer) dial(t testing.TB, cert tls.Certificate) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ts.pki.pool, ServerName: "localhost"}
	// The agent leaf carries no DNS SAN: verify the chain, not the name.
	cfg.InsecureSkipVerify = true
	cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		c, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return err
		}
		_, err = c.Verify(x509.VerifyOptions{Roots: ts.pki.pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		return err
	}
	conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// client is a test-side Session: a demultiplexer of replies by command_id.
type client struct {
	t      testing.TB
	stream clawkerdv1.ClawkerdService_SessionClient
	cancel context.CancelFunc
	sendMu sync.Mutex

	mu    sync.Mutex
	chans map[string]chan *clawkerdv1.Response
	done  chan struct{}
}

func (ts *testServer) session(t testing.TB) *client {
	t.Helper()
	return openSession(t, ts.dial(t, ts.pki.cp))
}

func openSession(t testing.TB, conn *grpc.ClientConn) *client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := clawkerdv1.NewClawkerdServiceClient(conn).Session(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &client{t: t, stream: stream, cancel: cancel, chans: map[string]chan *clawkerdv1.Response{}, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			c.ch(r.GetCommandId()) <- r
		}
	}()
	t.Cleanup(c.close)
	return c
}

func (c *client) close() {
	c.cancel()
	<-c.done
}

func (c *client) ch(id string) chan *clawkerdv1.Response {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.chans[id]
	if !ok {
		ch = make(chan *clawkerdv1.Response, 1<<16)
		c.chans[id] = ch
	}
	return ch
}

func (c *client) send(cmd *clawkerdv1.Command) {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if err := c.stream.Send(cmd); err != nil {
		c.t.Errorf("send %s: %v", cmd.GetCommandId(), err)
	}
}

// next returns the next reply for id, failing the test after a deadline.
func (c *client) next(id string) *clawkerdv1.Response {
	c.t.Helper()
	select {
	case r := <-c.ch(id):
		return r
	case <-time.After(30 * time.Second):
		c.t.Fatalf("no reply for %q", id)
		return nil
	}
}

// result is everything one ShellCommand produced.
type result struct {
	started bool
	output  []byte
	stderr  []byte // OutputChunks with stderr set (separate_stderr)
	stages  map[uint32]*clawkerdv1.StageExit
	done    *clawkerdv1.Done
	err     *clawkerdv1.Error
	order   []string
}

// collect reads replies for id up to its terminal Done or Error.
func (c *client) collect(id string) *result {
	c.t.Helper()
	res := &result{stages: map[uint32]*clawkerdv1.StageExit{}}
	for {
		r := c.next(id)
		switch p := r.GetPayload().(type) {
		case *clawkerdv1.Response_Started:
			res.started = true
			res.order = append(res.order, "started")
		case *clawkerdv1.Response_Output:
			if p.Output.GetStderr() {
				res.stderr = append(res.stderr, p.Output.GetData()...)
			} else {
				res.output = append(res.output, p.Output.GetData()...)
			}
		case *clawkerdv1.Response_StageExit:
			res.stages[p.StageExit.GetStageIndex()] = p.StageExit
			res.order = append(res.order, fmt.Sprintf("exit%d", p.StageExit.GetStageIndex()))
		case *clawkerdv1.Response_Done:
			res.done = p.Done
			return res
		case *clawkerdv1.Response_Error:
			res.err = p.Error
			return res
		default:
			c.t.Fatalf("unexpected reply for %s: %v", id, r)
		}
	}
}

// noMore asserts no further reply for id arrives within a short window.
func (c *client) noMore(id string) {
	c.t.Helper()
	select {
	case r := <-c.ch(id):
		c.t.Fatalf("unexpected extra reply for %s: %v", id, r)
	case <-time.After(200 * time.Millisecond):
	}
}

func stage(argv ...string) *clawkerdv1.PipeStage { return &clawkerdv1.PipeStage{Argv: argv} }

func shell(id string, sc *clawkerdv1.ShellCommand) *clawkerdv1.Command {
	return &clawkerdv1.Command{CommandId: id, Payload: &clawkerdv1.Command_Shell{Shell: sc}}
}

func stages(ss ...*clawkerdv1.PipeStage) *clawkerdv1.ShellCommand {
	return &clawkerdv1.ShellCommand{Stages: ss}
}

func (c *client) run(id string, sc *clawkerdv1.ShellCommand) *result {
	c.t.Helper()
	c.send(shell(id, sc))
	return c.collect(id)
}

func (c *client) hello() *clawkerdv1.HelloAck {
	c.t.Helper()
	c.send(&clawkerdv1.Command{CommandId: "hello", Payload: &clawkerdv1.Command_Hello{Hello: &clawkerdv1.Hello{}}})
	r := c.next("hello")
	if r.GetHelloAck() == nil {
		c.t.Fatalf("Hello reply is not HelloAck: %v", r)
	}
	return r.GetHelloAck()
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func trimLines(b []byte) string { return strings.TrimSpace(string(b)) }

func osWriteFile(path string, b []byte) error { return os.WriteFile(path, b, 0o600) }

func (p *testPKI) agentKey() *ecdsa.PrivateKey { return p.agent.PrivateKey.(*ecdsa.PrivateKey) }
