package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/egress/egressca"
	"github.com/clawker/clawker/internal/egress/policy"
)

var loopback = netip.MustParseAddr("127.0.0.1")

type fakeAttributor struct {
	agent   Agent
	trusted bool
	err     error
}

func (f fakeAttributor) Attribute(context.Context, netip.Addr) (Agent, bool, error) {
	return f.agent, f.trusted, f.err
}

type eventLog struct {
	mu  sync.Mutex
	evs []Event
}

func (l *eventLog) Emit(_ context.Context, ev Event) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

func (l *eventLog) all() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.evs...)
}

// find returns the first event of the stage for host, waiting for it:
// tunnel goroutines record asynchronously to the client.
func (l *eventLog) find(t *testing.T, stage, host string) Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, ev := range l.all() {
			if ev.Stage == stage && ev.Host == host {
				return ev
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event for %s; have %+v", stage, host, l.all())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var testAgent = Agent{ContainerID: "c0ffee", Name: "clawker.proj.dev", Project: "proj"}

// env is one gateway on loopback with an upstream CA for the fake
// internet, and the names of the zone all pointing at 127.0.0.1.
type env struct {
	t      *testing.T
	gw     *Gateway
	proxy  *httptest.Server
	events *eventLog
	gwCA   *egressca.CA
	upCA   *egressca.CA
	roots  *x509.CertPool // what an agent trusts: upstream CA + gateway CA
	zone   StaticZone
}

func newEnv(t *testing.T, policyYAML string, attr Attributor) *env {
	t.Helper()
	p, err := policy.Parse([]byte(policyYAML))
	if err != nil {
		t.Fatal(err)
	}
	m, err := policy.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	gwCA, err := egressca.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	upCA, err := egressca.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, events: &eventLog{}, gwCA: gwCA, upCA: upCA, zone: StaticZone{}}
	upRoots := x509.NewCertPool()
	upRoots.AddCert(upCA.Certificate())
	e.roots = x509.NewCertPool()
	e.roots.AddCert(upCA.Certificate())
	e.roots.AddCert(gwCA.Certificate())
	if attr == nil {
		attr = fakeAttributor{agent: testAgent, trusted: true}
	}
	e.gw, err = New(Config{
		Attributor:    attr,
		Policies:      PolicyFunc(func(string) *policy.Matcher { return m }),
		Resolver:      e.zone,
		Sink:          e.events,
		Decisions:     NewDecisionCounter(),
		CA:            gwCA,
		UpstreamRoots: upRoots,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.proxy = httptest.NewServer(NewProxy(e.gw))
	t.Cleanup(e.proxy.Close)
	return e
}

// name registers host in the zone at 127.0.0.1.
func (e *env) name(host string) { e.zone[host] = []netip.Addr{loopback} }

// httpsUpstream serves h over TLS with leaves from the upstream CA.
func (e *env) httpsUpstream(h http.Handler) string {
	s := httptest.NewUnstartedServer(h)
	s.TLS = &tls.Config{GetCertificate: func(hi *tls.ClientHelloInfo) (*tls.Certificate, error) {
		return e.upCA.Leaf(hi.ServerName)
	}}
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // refused tunnels end in handshake EOFs
	s.StartTLS()
	e.t.Cleanup(s.Close)
	return portOf(e.t, s.Listener.Addr())
}

func (e *env) httpUpstream(h http.Handler) string {
	s := httptest.NewServer(h)
	e.t.Cleanup(s.Close)
	return portOf(e.t, s.Listener.Addr())
}

func portOf(t *testing.T, a net.Addr) string {
	_, p, err := net.SplitHostPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// client is an agent's HTTP client through the proxy.
func (e *env) client() *http.Client {
	u, _ := url.Parse(e.proxy.URL)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy:           http.ProxyURL(u),
		TLSClientConfig: &tls.Config{RootCAs: e.roots},
	}}
}

// connect opens a CONNECT tunnel and returns the conn and status code.
func (e *env) connect(target string) (net.Conn, int) {
	e.t.Helper()
	conn, err := net.Dial("tcp", e.proxy.Listener.Addr().String())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n"); err != nil {
		e.t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	// Bytes after the response (a server-first banner) may sit in br.
	return &bufferedConn{Conn: conn, r: br}, resp.StatusCode
}

func get(t *testing.T, c *http.Client, method, u string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// echoTCP is an ssh-like server: it speaks first, then echoes.
func echoTCP(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, "SSH-2.0-fake\r\n")
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// connectRaw is a plain TCP connection to the proxy.
func (e *env) connectRaw() (net.Conn, error) {
	conn, err := net.Dial("tcp", e.proxy.Listener.Addr().String())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	return conn, nil
}
