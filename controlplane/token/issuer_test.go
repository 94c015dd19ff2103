package token

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/clawker/clawker/controlplane/peerid"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
	"github.com/clawker/clawker/internal/testenv/testpki"
)

type staticLookup struct {
	rc  peerid.Container
	err error
}

func (s staticLookup) LookupByIP(context.Context, netip.Addr) (peerid.Container, error) {
	return s.rc, s.err
}

func cid(n int) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(fmt.Sprint("c", n)))) }

func resolvedFor(t testing.TB, n int) peerid.Container {
	a, err := auth.NewAgentName("alpha")
	if err != nil {
		t.Fatal(err)
	}
	return peerid.Container{ContainerID: cid(n), AgentName: a}
}

// tokenFixture is an Issuer over a real sqlite jti store, driven through
// its http.Handler with the TLS state a verified mTLS handshake leaves.
type tokenFixture struct {
	ca     *auth.CA
	cliKey *ecdsa.PrivateKey
	leaf   *auth.Leaf // agent cert for container 1
	iss    *Issuer
	jti    *SQLiteJTIStore
	dbPath string
	logs   *logger.SyncBuffer
	now    time.Time
}

func newTokenFixture(t *testing.T, lookup PeerResolver) *tokenFixture {
	t.Helper()
	f := &tokenFixture{logs: &logger.SyncBuffer{}, now: time.Now()}
	var err error
	f.ca = testpki.NewAt(t, f.now).CA
	if f.cliKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	f.leaf = f.agentLeaf(t, 1)
	f.dbPath = filepath.Join(t.TempDir(), "cp.db")
	if f.jti, err = NewSQLiteJTIStore(f.dbPath, f.clock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.jti.Close() })
	if lookup == nil {
		lookup = staticLookup{rc: resolvedFor(t, 1)}
	}
	f.iss, err = NewIssuer(Config{
		AssertionKey: &f.cliKey.PublicKey, JTI: f.jti, PeerLookup: lookup,
		Clock: f.clock, Log: logger.New(f.logs, "debug", "test"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *tokenFixture) clock() time.Time { return f.now }

func (f *tokenFixture) agentLeaf(t testing.TB, n int) *auth.Leaf {
	r := resolvedFor(t, n)
	l, err := f.ca.MintAgent(r.Project, r.AgentName, r.ContainerID, f.now)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (f *tokenFixture) assertion(t testing.TB, n int) string {
	a, err := auth.MintAssertion(f.cliKey, cid(n), f.now)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// signAssertion signs arbitrary claims with alg and key (for forgeries).
func signAssertion(t testing.TB, alg jose.SignatureAlgorithm, key any, claims any) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func (f *tokenFixture) claims(n int) auth.AssertionClaims {
	return auth.AssertionClaims{
		Claims: jwt.Claims{
			Issuer: auth.AssertionIssuer, Subject: cid(n), Audience: jwt.Audience{consts.AssertionAudience},
			ID: fmt.Sprint("jti-", n, "-", f.now.UnixNano()), IssuedAt: jwt.NewNumericDate(f.now),
			Expiry: jwt.NewNumericDate(f.now.Add(10 * time.Minute)),
		},
		ContainerID: cid(n),
	}
}

type postOpts struct {
	method string
	leaf   *auth.Leaf // nil: no verified client cert
	form   url.Values
}

func (f *tokenFixture) form(assertion string) url.Values {
	return url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {assertionTypeJWTBearer},
		"client_assertion":      {assertion},
		"scope":                 {consts.ScopeRegister},
	}
}

func (f *tokenFixture) post(o postOpts) *httptest.ResponseRecorder {
	m := o.method
	if m == "" {
		m = http.MethodPost
	}
	r := httptest.NewRequest(m, consts.TokenPath, strings.NewReader(o.form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.RemoteAddr = "10.9.0.2:40000"
	if o.leaf != nil {
		r.TLS = &tls.ConnectionState{
			PeerCertificates: []*x509.Certificate{o.leaf.Cert},
			VerifiedChains:   [][]*x509.Certificate{{o.leaf.Cert, f.ca.Cert}},
		}
	}
	w := httptest.NewRecorder()
	f.iss.Handler().ServeHTTP(w, r)
	return w
}

func TestTokenIssuedAndBound(t *testing.T) {
	f := newTokenFixture(t, nil)
	w := f.post(postOpts{leaf: f.leaf, form: f.form(f.assertion(t, 1))})
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s\n%s", w.Code, w.Body, f.logs)
	}
	if w.Header().Get("Cache-Control") != "no-store" {
		t.Fatal("token response must be Cache-Control: no-store")
	}
	var resp tokenResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.TokenType != "Bearer" || resp.Scope != consts.ScopeRegister || resp.ExpiresIn != int64(DefaultTokenLifetime/time.Second) {
		t.Fatalf("response %+v", resp)
	}
	c, err := f.iss.Verifier().Verify(resp.AccessToken, f.leaf.Cert)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	sum := sha256.Sum256(f.leaf.Cert.Raw)
	if c.Cnf.X5tS256 != base64.RawURLEncoding.EncodeToString(sum[:]) || c.Subject != cid(1) || !c.HasScope(consts.ScopeRegister) {
		t.Fatalf("claims %+v", c)
	}
	if _, err := f.iss.Verifier().Verify(resp.AccessToken, f.agentLeaf(t, 1).Cert); err == nil {
		t.Fatal("token verified against a different cert")
	}
}

// TestTokenEndpointRejections: one row per reason; each asserts the HTTP
// status, the RFC 6749 §5.2 body, the event= log line and that no token
// was issued.
func TestTokenEndpointRejections(t *testing.T) {
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tests := []struct {
		name   string
		lookup PeerResolver
		req    func(t *testing.T, f *tokenFixture) postOpts
		status int
		code   string
		event  string
	}{
		{name: "GET", status: 405, code: "invalid_request", req: func(t *testing.T, f *tokenFixture) postOpts {
			return postOpts{method: http.MethodGet, leaf: f.leaf, form: f.form(f.assertion(t, 1))}
		}},
		{name: "wrong grant type", status: 400, code: "unsupported_grant_type", event: "token_unsupported_grant", req: func(t *testing.T, f *tokenFixture) postOpts {
			fm := f.form(f.assertion(t, 1))
			fm.Set("grant_type", "password")
			return postOpts{leaf: f.leaf, form: fm}
		}},
		{name: "unknown scope", status: 400, code: "invalid_scope", event: "token_invalid_scope", req: func(t *testing.T, f *tokenFixture) postOpts {
			fm := f.form(f.assertion(t, 1))
			fm.Set("scope", "admin:everything")
			return postOpts{leaf: f.leaf, form: fm}
		}},
		{name: "wrong assertion type", status: 401, code: "invalid_client", event: "token_invalid_client", req: func(t *testing.T, f *tokenFixture) postOpts {
			fm := f.form(f.assertion(t, 1))
			fm.Set("client_assertion_type", "urn:x")
			return postOpts{leaf: f.leaf, form: fm}
		}},
		{name: "no client cert", status: 401, code: "invalid_client", event: "token_no_client_cert", req: func(t *testing.T, f *tokenFixture) postOpts {
			return postOpts{form: f.form(f.assertion(t, 1))}
		}},
		{name: "client cert CN is not clawkerd", status: 401, code: "invalid_client", event: "token_cn_mismatch", req: func(t *testing.T, f *tokenFixture) postOpts {
			r := resolvedFor(t, 1)
			l, err := f.ca.Mint(auth.LeafSpec{
				CommonName: "clawker-impostor",
				EKUs:       []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
				URIs:       []string{auth.AgentURN(auth.AgentFullName(r.Project, r.AgentName)).String(), auth.ContainerURN(r.ContainerID).String()},
			}, f.now)
			if err != nil {
				t.Fatal(err)
			}
			return postOpts{leaf: l, form: f.form(f.assertion(t, 1))}
		}},
		{name: "missing assertion", status: 401, code: "invalid_client", event: "token_assertion_missing", req: func(t *testing.T, f *tokenFixture) postOpts {
			return postOpts{leaf: f.leaf, form: f.form("")}
		}},
		{name: "garbage assertion", status: 401, code: "invalid_client", event: "token_assertion_malformed", req: func(t *testing.T, f *tokenFixture) postOpts {
			return postOpts{leaf: f.leaf, form: f.form("not.a.jwt")}
		}},
		{name: "forged assertion (other key)", status: 401, code: "invalid_client", event: "token_assertion_bad_signature", req: func(t *testing.T, f *tokenFixture) postOpts {
			return postOpts{leaf: f.leaf, form: f.form(signAssertion(t, jose.ES256, otherKey, f.claims(1)))}
		}},
		{name: "alg none", status: 401, code: "invalid_client", event: "token_assertion_malformed", req: func(t *testing.T, f *tokenFixture) postOpts {
			hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
			body, _ := json.Marshal(f.claims(1))
			return postOpts{leaf: f.leaf, form: f.form(hdr + "." + base64.RawURLEncoding.EncodeToString(body) + ".")}
		}},
		{name: "HS256 keyed with the public key", status: 401, code: "invalid_client", event: "token_assertion_malformed", req: func(t *testing.T, f *tokenFixture) postOpts {
			pub, _ := x509.MarshalPKIXPublicKey(&f.cliKey.PublicKey)
			return postOpts{leaf: f.leaf, form: f.form(signAssertion(t, jose.HS256, pub, f.claims(1)))}
		}},
		{name: "ES384 (unexpected alg)", status: 401, code: "invalid_client", event: "token_assertion_malformed", req: func(t *testing.T, f *tokenFixture) postOpts {
			k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
			return postOpts{leaf: f.leaf, form: f.form(signAssertion(t, jose.ES384, k, f.claims(1)))}
		}},
		{name: "expired assertion", status: 401, code: "invalid_client", event: "token_assertion_claims_invalid", req: func(t *testing.T, f *tokenFixture) postOpts {
			c := f.claims(1)
			c.IssuedAt = jwt.NewNumericDate(f.now.Add(-20 * time.Minute))
			c.Expiry = jwt.NewNumericDate(f.now.Add(-10 * time.Minute))
			return postOpts{leaf: f.leaf, form: f.form(signAssertion(t, jose.ES256, f.cliKey, c))}
		}},
		{name: "no exp", status: 401, code: "invalid_client", event: "token_assertion_claims_invalid", req: func(t *testing.T, f *tokenFixture) postOpts {
			c := f.claims(1)
			c.Expiry = nil
			return postOpts{leaf: f.leaf, form: f.form(signAssertion(t, jose.ES256, f.cliKey, c))}
		}},
		{name: "not yet valid", status: 401, code: "invalid_client", event: "token_assertion_claims_invalid", req: func(t *testing.T, f *tokenFixture) postOpts {
			c := f.claims(1)
			c.NotBefore = jwt.NewNumericDate(f.now.Add(5 * time.Minute))
			return postOpts{leaf: f.leaf, form: f.form(signAssertion(t, jose.ES256, f.cliKey, c))}
		}},
		{name: "issued in the future", status: 401, code: "invalid_client", event: "token_assertion_claims_invalid", req: func(t *testing.T, f *tokenFixture) postOpts {
			c := f.claims(1)
			c.IssuedAt = jwt.NewNumericDate(f.now.Add(5 * time.Minute))
			return postOpts{leaf: f.leaf, form: f.form(signAssertion(t, jose.ES256, f.cliKey, c))}
		}},
		{name: "lifetime too long", status: 401, code: "invalid_client", event: "token_assertion_claims_invalid", req: func(t *testing.T, f *tokenFixture) postOpts {
			c := f.claims(1)
			c.Expiry = jwt.NewNumericDate(f.now.Add(30 * 24 * time.Hour))
			return postOpts{leaf: f.leaf, form: f.form(signAssertion(t, jose.ES256, f.cliKey, c))}
		}},
		{name: "wrong audience", status: 401, code: "invalid_client", event: "token_assertion_claims_invalid", req: func(t *testing.T, f *tokenFixture) postOpts {
			c := f.claims(1)
			c.Audience = jwt.Audience{consts.TokenAudience}
			return postOpts{leaf: f.leaf, form: f.form(signAssertion(t, jose.ES256, f.cliKey, c))}
		}},
		{name: "wrong issuer", status: 401, code: "invalid_client", event: "token_assertion_claims_invalid", req: func(t *testing.T, f *tokenFixture) postOpts {
			c := f.claims(1)
			c.Issuer = "someone"
			return postOpts{leaf: f.leaf, form: f.form(signAssertion(t, jose.ES256, f.cliKey, c))}
		}},
		{name: "missing jti", status: 401, code: "invalid_client", event: "token_assertion_claims_invalid", req: func(t *testing.T, f *tokenFixture) postOpts {
			c := f.claims(1)
			c.ID = ""
			return postOpts{leaf: f.leaf, form: f.form(signAssertion(t, jose.ES256, f.cliKey, c))}
		}},
		{name: "sub and container_id disagree", status: 401, code: "invalid_client", event: "token_assertion_claims_invalid", req: func(t *testing.T, f *tokenFixture) postOpts {
			c := f.claims(1)
			c.ContainerID = cid(2)
			return postOpts{leaf: f.leaf, form: f.form(signAssertion(t, jose.ES256, f.cliKey, c))}
		}},
		{name: "assertion for another container than the cert", status: 401, code: "invalid_client", event: "token_assertion_cert_mismatch", req: func(t *testing.T, f *tokenFixture) postOpts {
			return postOpts{leaf: f.leaf, form: f.form(f.assertion(t, 2))}
		}},
		{name: "assertion minted for another container than the peer", lookup: staticLookup{rc: peerid.Container{ContainerID: cid(3)}},
			status: 401, code: "invalid_client", event: "token_assertion_wrong_container", req: func(t *testing.T, f *tokenFixture) postOpts {
				return postOpts{leaf: f.leaf, form: f.form(f.assertion(t, 1))}
			}},
		{name: "peer IP resolves to nothing", lookup: staticLookup{err: peerid.ErrNoContainerForPeerIP},
			status: 401, code: "invalid_client", event: "token_peer_unresolved", req: func(t *testing.T, f *tokenFixture) postOpts {
				return postOpts{leaf: f.leaf, form: f.form(f.assertion(t, 1))}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTokenFixture(t, tt.lookup)
			w := f.post(tt.req(t, f))
			if w.Code != tt.status {
				t.Fatalf("status = %d, want %d; body %s\n%s", w.Code, tt.status, w.Body, f.logs)
			}
			var body map[string]string
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q is not JSON: %v", w.Body, err)
			}
			if body["error"] != tt.code || body["access_token"] != "" {
				t.Fatalf("body = %v, want error %q", body, tt.code)
			}
			if tt.code == "invalid_client" && body["error_description"] != "client authentication failed" {
				t.Fatalf("description %q is not the generic one", body["error_description"])
			}
			if tt.event != "" && !strings.Contains(f.logs.String(), `"event":"`+tt.event+`"`) {
				t.Fatalf("no event=%s log line:\n%s", tt.event, f.logs)
			}
			if strings.Contains(f.logs.String(), `"event":"token_issued"`) {
				t.Fatal("a token was issued")
			}
		})
	}
}

// TestAssertionSingleUseAcrossRestart: a redeemed assertion stays redeemed
// after the CP (and its jti store) restarts.
func TestAssertionSingleUseAcrossRestart(t *testing.T) {
	f := newTokenFixture(t, nil)
	a := f.assertion(t, 1)
	if w := f.post(postOpts{leaf: f.leaf, form: f.form(a)}); w.Code != 200 {
		t.Fatalf("first use: %d %s", w.Code, w.Body)
	}
	if w := f.post(postOpts{leaf: f.leaf, form: f.form(a)}); w.Code != 401 || !strings.Contains(f.logs.String(), `"event":"token_assertion_replayed"`) {
		t.Fatalf("replay: %d %s", w.Code, w.Body)
	}
	// Restart: close the store, reopen the same file, new Issuer.
	if err := f.jti.Close(); err != nil {
		t.Fatal(err)
	}
	store, err := NewSQLiteJTIStore(f.dbPath, f.clock)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	f.jti = store
	f.iss, err = NewIssuer(Config{AssertionKey: &f.cliKey.PublicKey, JTI: store, PeerLookup: staticLookup{rc: resolvedFor(t, 1)}, Clock: f.clock, Log: logger.New(f.logs, "debug", "test")})
	if err != nil {
		t.Fatal(err)
	}
	if w := f.post(postOpts{leaf: f.leaf, form: f.form(a)}); w.Code != 401 {
		t.Fatalf("replay after restart: %d %s", w.Code, w.Body)
	}
}

// TestStolenAssertionNotBurned: an assertion presented from the wrong
// container is refused without consuming its single use.
func TestStolenAssertionNotBurned(t *testing.T) {
	f := newTokenFixture(t, staticLookup{rc: peerid.Container{ContainerID: cid(9)}})
	a := f.assertion(t, 1)
	if w := f.post(postOpts{leaf: f.leaf, form: f.form(a)}); w.Code != 401 {
		t.Fatalf("stolen use: %d", w.Code)
	}
	f.iss.lookup = staticLookup{rc: resolvedFor(t, 1)}
	if w := f.post(postOpts{leaf: f.leaf, form: f.form(a)}); w.Code != 200 {
		t.Fatalf("legitimate use after theft attempt: %d %s", w.Code, w.Body)
	}
}

func TestNewIssuerValidates(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ok := Config{AssertionKey: &k.PublicKey, JTI: &MemoryJTIStore{}, PeerLookup: staticLookup{}}
	if _, err := NewIssuer(ok); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"no key":      func(c *Config) { c.AssertionKey = nil },
		"P-384 key":   func(c *Config) { c.AssertionKey = &k384.PublicKey },
		"no jti":      func(c *Config) { c.JTI = nil },
		"no lookup":   func(c *Config) { c.PeerLookup = nil },
		"bad keyfile": func(c *Config) { c.AssertionKey = nil; c.AssertionKeyFile = filepath.Join(t.TempDir(), "missing.pem") },
	} {
		c := ok
		mut(&c)
		if _, err := NewIssuer(c); err == nil {
			t.Errorf("%s: NewIssuer accepted an invalid config", name)
		}
	}
	// Key from a PEM file, as the CP loads it.
	p, _ := auth.PublicKeyPEM(&k.PublicKey)
	path := filepath.Join(t.TempDir(), "pub.pem")
	if err := auth.WriteFileAtomic(path, p, 0o644); err != nil {
		t.Fatal(err)
	}
	c := ok
	c.AssertionKey, c.AssertionKeyFile = nil, path
	if _, err := NewIssuer(c); err != nil {
		t.Fatalf("key file: %v", err)
	}
}
