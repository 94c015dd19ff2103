package clawkerd

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	agentv1 "github.com/clawker/clawker/api/agent/v1"
	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/consts"
)

// fakeCP is a token endpoint and AgentService with the CP's TLS posture,
// recording what clawkerd presented.
type fakeCP struct {
	t           *testing.T
	tokenURL    string
	agentAddr   string
	exchanges   atomic.Int32
	registers   atomic.Int32
	tokenConns  atomic.Int32 // TCP conns accepted by the token endpoint
	agentConns  atomic.Int32 // TCP conns accepted by the AgentService
	failNext    atomic.Bool  // next Register returns Unavailable
	mu          sync.Mutex
	lastReq     *agentv1.RegisterRequest
	problems    []string
	wantAssert  string
	accessToken string
}

func (f *fakeCP) problem(format string, a ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.problems = append(f.problems, fmt.Sprintf(format, a...))
}

func startFakeCP(t *testing.T, pki *testPKI, assertion string) *fakeCP {
	f := &fakeCP{t: t, wantAssert: assertion, accessToken: "access-token-123"}
	serverTLS := &tls.Config{Certificates: []tls.Certificate{pki.cp}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pki.pool}

	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.exchanges.Add(1)
		if r.URL.Path != consts.TokenPath || r.Method != http.MethodPost {
			f.problem("token request %s %s", r.Method, r.URL.Path)
		}
		if len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != consts.ContainerClawkerd {
			f.problem("token request without agent client cert")
		}
		if err := r.ParseForm(); err != nil {
			f.problem("form: %v", err)
		}
		want := map[string]string{
			"grant_type":            "client_credentials",
			"client_assertion_type": JWTBearerAssertionType,
			"client_assertion":      f.wantAssert,
			"scope":                 consts.ScopeRegister,
		}
		for k, v := range want {
			if got := r.PostForm.Get(k); got != v {
				f.problem("form %s=%q, want %q", k, got, v)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": f.accessToken, "token_type": "Bearer", "expires_in": 300})
	}))
	ts.TLS = serverTLS
	ts.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			f.tokenConns.Add(1)
		}
	}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	f.tokenURL = ts.URL + consts.TokenPath

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS)))
	agentv1.RegisterAgentServiceServer(gs, &fakeAgentService{f: f})
	go func() { _ = gs.Serve(countingListener{lis, &f.agentConns}) }()
	t.Cleanup(gs.Stop)
	f.agentAddr = lis.Addr().String()
	return f
}

type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

type fakeAgentService struct {
	agentv1.UnimplementedAgentServiceServer
	f *fakeCP
}

func (s *fakeAgentService) Register(ctx context.Context, req *agentv1.RegisterRequest) (*agentv1.Welcome, error) {
	s.f.registers.Add(1)
	md, _ := metadata.FromIncomingContext(ctx)
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer "+s.f.accessToken {
		s.f.problem("authorization %v", got)
		return nil, status.Error(codes.PermissionDenied, "registration rejected")
	}
	s.f.mu.Lock()
	s.f.lastReq = req
	s.f.mu.Unlock()
	if s.f.failNext.CompareAndSwap(true, false) {
		return nil, status.Error(codes.Unavailable, "try again")
	}
	return &agentv1.Welcome{}, nil
}

func registerRequired(c *client, id string) *clawkerdv1.RegisterDone {
	c.t.Helper()
	c.send(&clawkerdv1.Command{CommandId: id, Payload: &clawkerdv1.Command_RegisterRequired{RegisterRequired: &clawkerdv1.RegisterRequired{}}})
	r := c.next(id)
	if r.GetRegisterDone() == nil {
		c.t.Fatalf("want RegisterDone, got %v", r)
	}
	return r.GetRegisterDone()
}

// startServerWithCP starts a server for agent dev in project proj whose
// Register goes to a fake CP expecting its assertion.
func startServerWithCP(t *testing.T, mutate func(*Config)) (*testServer, *fakeCP) {
	t.Helper()
	var cp *fakeCP
	pki := newTestPKI(t)
	ts := startServerPKI(t, pki, func(c *Config) {
		c.AgentName, c.Project = "dev", "proj"
		c.Assertion = "the.jwt.assertion"
		cp = startFakeCP(t, pki, c.Assertion)
		c.CPTokenURL, c.CPAgentAddr = cp.tokenURL, cp.agentAddr
		if mutate != nil {
			mutate(c)
		}
	})
	return ts, cp
}

func TestRegisterSingleUse(t *testing.T) {
	ts, cp := startServerWithCP(t, nil)
	// Concurrent RegisterRequired on two Sessions: one exchange, one Register.
	c1, c2 := ts.session(t), ts.session(t)
	var wg sync.WaitGroup
	for i, c := range []*client{c1, c2, c1} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if d := registerRequired(c, fmt.Sprintf("reg%d", i)); !d.GetOk() {
				t.Errorf("RegisterDone %v", d)
			}
		}()
	}
	wg.Wait()
	if d := registerRequired(c2, "later"); !d.GetOk() {
		t.Fatalf("later RegisterRequired: %v", d)
	}
	if cp.exchanges.Load() != 1 || cp.registers.Load() != 1 {
		t.Fatalf("exchanges=%d registers=%d, want 1/1", cp.exchanges.Load(), cp.registers.Load())
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if len(cp.problems) > 0 {
		t.Fatalf("fake CP saw: %v", cp.problems)
	}
	if cp.lastReq.GetAgentName() != "dev" || cp.lastReq.GetProject() != "proj" {
		t.Fatalf("request %v", cp.lastReq)
	}
}

func TestRegisterRetryReusesToken(t *testing.T) {
	var cp *fakeCP
	pki := newTestPKI(t)
	ts := startServerPKI(t, pki, func(c *Config) {
		c.AssertionPath = t.TempDir() + "/assertion.jwt"
		must(t, writeFile(c.AssertionPath, "file.jwt\n"))
		cp = startFakeCP(t, pki, "file.jwt")
		c.CPTokenURL, c.CPAgentAddr = cp.tokenURL, cp.agentAddr
	})
	cp.failNext.Store(true)
	c := ts.session(t)
	if d := registerRequired(c, "r1"); d.GetOk() || d.GetError() == "" {
		t.Fatalf("first attempt should fail: %v", d)
	}
	if d := registerRequired(c, "r2"); !d.GetOk() {
		t.Fatalf("retry: %v", d)
	}
	if cp.exchanges.Load() != 1 || cp.registers.Load() != 2 {
		t.Fatalf("assertion spent %d times, %d Register calls", cp.exchanges.Load(), cp.registers.Load())
	}
}

func TestRegisterFailsClosedWithoutCP(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Assertion = "x" })
	c := ts.session(t)
	if d := registerRequired(c, "r"); d.GetOk() {
		t.Fatal("register without CP endpoints reported ok")
	}
}

func writeFile(path, s string) error { return osWriteFile(path, []byte(s)) }

// TestRegisterRemovesSpentAssertion: after a successful exchange the
// assertion file is gone (it is only replay material then), and a later
// Register on the same clawkerd needs no assertion.
func TestRegisterRemovesSpentAssertion(t *testing.T) {
	var cp *fakeCP
	pki := newTestPKI(t)
	path := t.TempDir() + "/assertion.jwt"
	ts := startServerPKI(t, pki, func(c *Config) {
		c.AssertionPath = path
		must(t, writeFile(c.AssertionPath, "file.jwt\n"))
		cp = startFakeCP(t, pki, "file.jwt")
		c.CPTokenURL, c.CPAgentAddr = cp.tokenURL, cp.agentAddr
	})
	cp.failNext.Store(true) // the token outlives a failed Register call
	c := ts.session(t)
	if d := registerRequired(c, "r1"); d.GetOk() {
		t.Fatalf("first attempt should fail: %v", d)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("assertion still on disk after the exchange: %v", err)
	}
	if d := registerRequired(c, "r2"); !d.GetOk() {
		t.Fatalf("retry with the kept token: %v", d)
	}
	if cp.exchanges.Load() != 1 {
		t.Fatalf("%d exchanges", cp.exchanges.Load())
	}
}
