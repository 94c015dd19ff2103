package agent_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	agentv1 "github.com/clawker/clawker/api/agent/v1"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/token"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// fakeLookup maps every peer (all loopback here) to one configurable answer.
type fakeLookup struct {
	mu  sync.Mutex
	rc  agent.ResolvedContainer
	err error
}

func (f *fakeLookup) LookupByIP(_ context.Context, ip netip.Addr) (agent.ResolvedContainer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ip != netip.MustParseAddr("127.0.0.1") {
		return agent.ResolvedContainer{}, agent.ErrNoContainerForPeerIP
	}
	return f.rc, f.err
}

func (f *fakeLookup) set(rc agent.ResolvedContainer, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rc, f.err = rc, err
}

func cid(n int) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(fmt.Sprint("c", n)))) }

func resolved(t testing.TB, n int, project, name string) agent.ResolvedContainer {
	t.Helper()
	p, err := auth.NewProjectSlug(project)
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.NewAgentName(name)
	if err != nil {
		t.Fatal(err)
	}
	return agent.ResolvedContainer{ContainerID: cid(n), Project: p, AgentName: a}
}

// chain is the agent listener exactly as the daemon wires it — TLS
// (RequireAndVerifyClientCert, CA pool, ClientAuth EKU) → AuthInterceptor →
// IdentityInterceptor → Handler — plus the token endpoint, both on
// loopback with real TLS and a real sqlite registry.
type chain struct {
	ca        *auth.CA
	cliKey    *ecdsa.PrivateKey
	tokenKey  *ecdsa.PrivateKey // the CP's access-token signing key
	reg       *agent.SQLiteRegistry
	lookup    *fakeLookup
	logs      *logger.SyncBuffer
	agentAddr string
	tokenURL  string

	mu  sync.Mutex
	now time.Time
}

func (c *chain) clock() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *chain) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newChain(t testing.TB) *chain {
	t.Helper()
	c := &chain{lookup: &fakeLookup{}, logs: &logger.SyncBuffer{}, now: time.Now()}
	log := logger.New(c.logs, "debug", "test")
	var err error
	if c.ca, err = auth.NewCA(time.Now()); err != nil {
		t.Fatal(err)
	}
	if c.cliKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	cp, err := c.ca.MintControlPlane(nil, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.ca.Cert)
	tlsCfg, err := token.ServerTLSConfig(tlsCert(cp), pool)
	if err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(t.TempDir(), "cp.db")
	if c.reg, err = agent.NewSQLiteWriter(dbPath, log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.reg.Close() })
	jti, err := token.NewSQLiteJTIStore(dbPath, c.clock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { jti.Close() })
	if c.tokenKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	iss, err := token.NewIssuer(token.Config{
		SigningKey:   c.tokenKey,
		AssertionKey: &c.cliKey.PublicKey,
		JTI:          jti,
		PeerLookup:   c.lookup,
		Scopes:       []string{consts.ScopeRegister, "agent:self:other"},
		Clock:        c.clock,
		Log:          log,
	})
	if err != nil {
		t.Fatal(err)
	}

	// Token endpoint.
	tl, err := tls.Listen("tcp", "127.0.0.1:0", tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: iss.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(tl) }()
	t.Cleanup(func() { hs.Close() })
	c.tokenURL = "https://" + tl.Addr().String() + consts.TokenPath

	// Agent listener.
	au, as, err := token.AuthInterceptor(iss.Verifier(), map[string]string{consts.RegisterMethod: consts.ScopeRegister}, log)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := agent.AgentServerOptions(tlsCfg, au, as, c.lookup, log)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(opts...)
	h, err := agent.NewHandler(c.reg, log, c.clock)
	if err != nil {
		t.Fatal(err)
	}
	agentv1.RegisterAgentServiceServer(gs, h)
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(gl) }()
	t.Cleanup(gs.Stop)
	c.agentAddr = gl.Addr().String()
	return c
}

func tlsCert(l *auth.Leaf) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{l.Cert.Raw}, PrivateKey: l.Key, Leaf: l.Cert}
}

// agentLeaf mints the standard agent cert for container n.
func (c *chain) agentLeaf(t testing.TB, n int, project, name string) *auth.Leaf {
	t.Helper()
	rc := resolved(t, n, project, name)
	l, err := c.ca.MintAgent(rc.Project, rc.AgentName, rc.ContainerID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// customLeaf mints an arbitrary leaf from the chain's CA.
func (c *chain) customLeaf(t testing.TB, cn string, ekus []x509.ExtKeyUsage, uris ...string) *auth.Leaf {
	t.Helper()
	l, err := c.ca.Mint(auth.LeafSpec{CommonName: cn, EKUs: ekus, URIs: uris}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (c *chain) clientTLS(leaf *auth.Leaf) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(c.ca.Cert)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}
	if leaf != nil {
		cfg.Certificates = []tls.Certificate{tlsCert(leaf)}
	}
	return cfg
}

// fetchToken runs the client-credentials exchange; it fails the test
// unless the endpoint issues a token.
func (c *chain) fetchToken(t testing.TB, leaf *auth.Leaf, containerN int, scope string) string {
	t.Helper()
	a, err := auth.MintAssertion(c.cliKey, cid(containerN), c.clock())
	if err != nil {
		t.Fatal(err)
	}
	hc := c.tokenClient(leaf)
	defer hc.CloseIdleConnections()
	return c.redeem(t, hc, a, scope)
}

// tokenClient is an HTTPS client for the token endpoint presenting leaf.
func (c *chain) tokenClient(leaf *auth.Leaf) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: c.clientTLS(leaf)}, Timeout: 10 * time.Second}
}

// redeem posts assertion to the token endpoint over hc (a benchmark
// reuses one across calls); it fails the test unless a token is issued.
func (c *chain) redeem(t testing.TB, hc *http.Client, assertion, scope string) string {
	t.Helper()
	code, body := c.postToken(hc, assertion, scope)
	if code != http.StatusOK {
		t.Fatalf("token endpoint: %d %s\nlogs:\n%s", code, body, c.logs.String())
	}
	var resp struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if err := json.Unmarshal(body, &resp); err != nil || resp.AccessToken == "" || resp.TokenType != "Bearer" {
		t.Fatalf("token response %s: %v", body, err)
	}
	return resp.AccessToken
}

func (c *chain) postToken(hc *http.Client, assertion, scope string) (int, []byte) {
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {assertion},
		"scope":                 {scope},
	}
	resp, err := hc.PostForm(c.tokenURL, form)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.Bytes()
}

// register calls AgentService.Register over mTLS with leaf and bearer tok.
func (c *chain) register(t testing.TB, leaf *auth.Leaf, tok string, req *agentv1.RegisterRequest) error {
	t.Helper()
	conn, err := grpc.NewClient(c.agentAddr, grpc.WithTransportCredentials(credentials.NewTLS(c.clientTLS(leaf))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if tok != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	_, err = agentv1.NewAgentServiceClient(conn).Register(ctx, req)
	return err
}

func (c *chain) rows(t testing.TB) []agent.Entry {
	t.Helper()
	s, err := c.reg.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestChainRegisterSuccessAndIdempotentRetry(t *testing.T) {
	c := newChain(t)
	c.lookup.set(resolved(t, 1, "proj", "alpha"), nil)
	leaf := c.agentLeaf(t, 1, "proj", "alpha")
	tok := c.fetchToken(t, leaf, 1, consts.ScopeRegister)
	req := &agentv1.RegisterRequest{AgentName: "alpha", Project: "proj"}
	if err := c.register(t, leaf, tok, req); err != nil {
		t.Fatalf("Register: %v\nlogs:\n%s", err, c.logs.String())
	}
	rows := c.rows(t)
	if len(rows) != 1 || rows[0].ContainerID != cid(1) || rows[0].Thumbprint != auth.Thumbprint(leaf.Cert) ||
		rows[0].AgentName.String() != "alpha" || rows[0].Project.String() != "proj" {
		t.Fatalf("rows = %+v", rows)
	}
	// Session retry after the row was written: same cert, same token.
	if err := c.register(t, leaf, tok, req); err != nil {
		t.Fatalf("idempotent retry: %v", err)
	}
	if len(c.rows(t)) != 1 || !strings.Contains(c.logs.String(), `"event":"register_idempotent"`) {
		t.Fatalf("retry changed rows or was not logged as idempotent")
	}
}

// TestChainRejections is the identity gate's rejection table: one row per
// reason, through the real listener chain. Each row asserts the gRPC code,
// the generic message, the event= log line, and that no row was written.
func TestChainRejections(t *testing.T) {
	const (
		msgRejected = "registration rejected"
		msgAuth     = "authentication required"
		msgScope    = "permission denied"
	)
	okReq := &agentv1.RegisterRequest{AgentName: "alpha", Project: "proj"}
	type result struct {
		err     error
		preRows int
	}
	tests := []struct {
		name  string
		code  codes.Code
		msg   string // "" = TLS-layer refusal, no application message
		event string
		run   func(t *testing.T, c *chain) result
	}{
		{name: "no client cert", code: codes.Unavailable, run: func(t *testing.T, c *chain) result {
			return result{err: c.register(t, nil, "", okReq)}
		}},
		{name: "cert from another CA", code: codes.Unavailable, run: func(t *testing.T, c *chain) result {
			other, err := auth.NewCA(time.Now())
			if err != nil {
				t.Fatal(err)
			}
			rc := resolved(t, 1, "proj", "alpha")
			l, err := other.MintAgent(rc.Project, rc.AgentName, rc.ContainerID, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			return result{err: c.register(t, l, "", okReq)}
		}},
		{name: "cert without ClientAuth EKU", code: codes.Unavailable, run: func(t *testing.T, c *chain) result {
			l := c.customLeaf(t, consts.ContainerClawkerd, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
				auth.AgentURN("clawker.proj.alpha").String(), auth.ContainerURN(cid(1)).String())
			return result{err: c.register(t, l, "", okReq)}
		}},
		{name: "missing token", code: codes.Unauthenticated, msg: msgAuth, event: "auth_token_missing", run: func(t *testing.T, c *chain) result {
			return result{err: c.register(t, c.agentLeaf(t, 1, "proj", "alpha"), "", okReq)}
		}},
		{name: "expired token", code: codes.Unauthenticated, msg: msgAuth, event: "auth_token_claims_invalid", run: func(t *testing.T, c *chain) result {
			leaf := c.agentLeaf(t, 1, "proj", "alpha")
			tok := c.fetchToken(t, leaf, 1, "")
			c.advance(token.DefaultTokenLifetime + time.Minute)
			return result{err: c.register(t, leaf, tok, okReq)}
		}},
		{name: "forged token", code: codes.Unauthenticated, msg: msgAuth, event: "auth_token_forged", run: func(t *testing.T, c *chain) result {
			leaf := c.agentLeaf(t, 1, "proj", "alpha")
			return result{err: c.register(t, leaf, forgeAccessToken(t, leaf, c.clock()), okReq)}
		}},
		{name: "token bound to another cert", code: codes.Unauthenticated, msg: msgAuth, event: "auth_token_unbound", run: func(t *testing.T, c *chain) result {
			first := c.agentLeaf(t, 1, "proj", "alpha")
			tok := c.fetchToken(t, first, 1, "")
			second := c.agentLeaf(t, 1, "proj", "alpha") // same identity, different key
			return result{err: c.register(t, second, tok, okReq)}
		}},
		{name: "token with wrong scope", code: codes.PermissionDenied, msg: msgScope, event: "auth_scope_insufficient", run: func(t *testing.T, c *chain) result {
			leaf := c.agentLeaf(t, 1, "proj", "alpha")
			return result{err: c.register(t, leaf, c.fetchToken(t, leaf, 1, "agent:self:other"), okReq)}
		}},
		{name: "wrong CN", code: codes.PermissionDenied, msg: msgRejected, event: "identity_cn_mismatch", run: func(t *testing.T, c *chain) result {
			l := c.customLeaf(t, "clawker-impostor", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
				auth.AgentURN("clawker.proj.alpha").String(), auth.ContainerURN(cid(1)).String())
			// The token endpoint refuses this CN too (token_cn_mismatch); a
			// genuinely signed token proves the identity gate holds alone.
			return result{err: c.register(t, l, signAccessToken(t, c.tokenKey, l, c.clock()), okReq)}
		}},
		{name: "missing agent SAN", code: codes.PermissionDenied, msg: msgRejected, event: "identity_san_invalid", run: func(t *testing.T, c *chain) result {
			l := c.customLeaf(t, consts.ContainerClawkerd, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, auth.ContainerURN(cid(1)).String())
			return result{err: c.register(t, l, c.fetchToken(t, l, 1, ""), okReq)}
		}},
		{name: "malformed agent SAN", code: codes.PermissionDenied, msg: msgRejected, event: "identity_san_invalid", run: func(t *testing.T, c *chain) result {
			l := c.customLeaf(t, consts.ContainerClawkerd, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
				"urn:clawker:agent:clawker.proj.Alpha.x", auth.ContainerURN(cid(1)).String())
			return result{err: c.register(t, l, c.fetchToken(t, l, 1, ""), okReq)}
		}},
		{name: "two agent SANs", code: codes.PermissionDenied, msg: msgRejected, event: "identity_san_invalid", run: func(t *testing.T, c *chain) result {
			l := c.customLeaf(t, consts.ContainerClawkerd, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
				auth.AgentURN("clawker.proj.alpha").String(), auth.AgentURN("clawker.proj.root").String(), auth.ContainerURN(cid(1)).String())
			return result{err: c.register(t, l, c.fetchToken(t, l, 1, ""), okReq)}
		}},
		{name: "agent SAN disagrees with labels", code: codes.PermissionDenied, msg: msgRejected, event: "identity_san_mismatch", run: func(t *testing.T, c *chain) result {
			l := c.agentLeaf(t, 1, "proj", "mallory")
			return result{err: c.register(t, l, c.fetchToken(t, l, 1, ""), &agentv1.RegisterRequest{AgentName: "mallory", Project: "proj"})}
		}},
		{name: "peer IP with no container", code: codes.PermissionDenied, msg: msgRejected, event: "identity_peer_unresolved", run: func(t *testing.T, c *chain) result {
			l := c.agentLeaf(t, 1, "proj", "alpha")
			tok := c.fetchToken(t, l, 1, "")
			c.lookup.set(agent.ResolvedContainer{}, agent.ErrNoContainerForPeerIP)
			return result{err: c.register(t, l, tok, okReq)}
		}},
		{name: "two containers claim the peer IP", code: codes.PermissionDenied, msg: msgRejected, event: "identity_peer_unresolved", run: func(t *testing.T, c *chain) result {
			l := c.agentLeaf(t, 1, "proj", "alpha")
			tok := c.fetchToken(t, l, 1, "")
			c.lookup.set(agent.ResolvedContainer{}, fmt.Errorf("x: %w", agent.ErrAmbiguousPeerIP))
			return result{err: c.register(t, l, tok, okReq)}
		}},
		{name: "invalid agent label", code: codes.PermissionDenied, msg: msgRejected, event: "identity_peer_unresolved", run: func(t *testing.T, c *chain) result {
			l := c.agentLeaf(t, 1, "proj", "alpha")
			tok := c.fetchToken(t, l, 1, "")
			c.lookup.set(agent.ResolvedContainer{}, fmt.Errorf("x: %w", agent.ErrInvalidAgentLabel))
			return result{err: c.register(t, l, tok, okReq)}
		}},
		{name: "request body disagrees with labels", code: codes.PermissionDenied, msg: msgRejected, event: "register_request_mismatch", run: func(t *testing.T, c *chain) result {
			l := c.agentLeaf(t, 1, "proj", "alpha")
			return result{err: c.register(t, l, c.fetchToken(t, l, 1, ""), &agentv1.RegisterRequest{AgentName: "beta", Project: "proj"})}
		}},
		{name: "request body malformed", code: codes.InvalidArgument, msg: "invalid request", event: "register_invalid_request", run: func(t *testing.T, c *chain) result {
			l := c.agentLeaf(t, 1, "proj", "alpha")
			return result{err: c.register(t, l, c.fetchToken(t, l, 1, ""), &agentv1.RegisterRequest{AgentName: "", Project: "proj"})}
		}},
		{name: "container SAN differs from resolved container", code: codes.PermissionDenied, msg: msgRejected, event: "register_container_san_mismatch", run: func(t *testing.T, c *chain) result {
			// The cert (and its token) belong to container 2; the peer IP
			// now resolves to container 1 with the same labels.
			c.lookup.set(resolved(t, 2, "proj", "alpha"), nil)
			l := c.agentLeaf(t, 2, "proj", "alpha")
			tok := c.fetchToken(t, l, 2, "")
			c.lookup.set(resolved(t, 1, "proj", "alpha"), nil)
			return result{err: c.register(t, l, tok, okReq)}
		}},
		{name: "replayed cert for an existing row", code: codes.PermissionDenied, msg: msgRejected, event: "register_thumbprint_replay", run: func(t *testing.T, c *chain) result {
			first := c.agentLeaf(t, 1, "proj", "alpha")
			if err := c.register(t, first, c.fetchToken(t, first, 1, ""), okReq); err != nil {
				t.Fatalf("first Register: %v", err)
			}
			second := c.agentLeaf(t, 1, "proj", "alpha")
			err := c.register(t, second, c.fetchToken(t, second, 1, ""), okReq)
			rows := c.rows(t)
			if len(rows) != 1 || rows[0].Thumbprint != auth.Thumbprint(first.Cert) {
				t.Fatalf("replay modified the row: %+v", rows)
			}
			return result{err: err, preRows: 1}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newChain(t)
			c.lookup.set(resolved(t, 1, "proj", "alpha"), nil)
			res := tt.run(t, c)
			st, ok := status.FromError(res.err)
			if res.err == nil || !ok {
				t.Fatalf("Register err = %v, want a gRPC status", res.err)
			}
			if st.Code() != tt.code {
				t.Fatalf("code = %v (%q), want %v\nlogs:\n%s", st.Code(), st.Message(), tt.code, c.logs.String())
			}
			if tt.msg != "" && st.Message() != tt.msg {
				t.Fatalf("message = %q, want the generic %q", st.Message(), tt.msg)
			}
			if tt.code == codes.Unavailable {
				// Refused in the TLS handshake: nothing above TLS ran.
				for _, ev := range []string{`"event":"auth_`, `"event":"identity_`, `"event":"register_`} {
					if strings.Contains(c.logs.String(), ev) {
						t.Fatalf("TLS-layer refusal reached the interceptors:\n%s", c.logs.String())
					}
				}
			}
			if tt.event != "" && !strings.Contains(c.logs.String(), `"event":"`+tt.event+`"`) {
				t.Fatalf("no event=%s log line:\n%s", tt.event, c.logs.String())
			}
			if n := len(c.rows(t)); n != res.preRows {
				t.Fatalf("registry has %d rows, want %d", n, res.preRows)
			}
			if strings.Contains(c.logs.String(), `"event":"agent_registered"`) && res.preRows == 0 {
				t.Fatal("a rejected request logged agent_registered")
			}
		})
	}
}
