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
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	agentv1 "github.com/clawker/clawker/api/agent/v1"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/token"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
	"github.com/clawker/clawker/internal/testenv/testpki"
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
	dbPath    string // the registry's sqlite file

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
	tp := testpki.New(t)
	c.ca = tp.CA
	if c.cliKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	cp, pool := tp.CP, tp.Pool
	tlsCfg, err := token.ServerTLSConfig(tlsCert(cp), pool)
	if err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(t.TempDir(), "cp.db")
	c.dbPath = dbPath
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

// tlsCert is testpki.TLSCert under the name this package's tests use.
func tlsCert(l *auth.Leaf) tls.Certificate { return testpki.TLSCert(l) }

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
