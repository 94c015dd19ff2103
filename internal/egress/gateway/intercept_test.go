package gateway

import (
	"bufio"
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/egress/policy"
)

const interceptWSPolicy = `
defaults: false
allow:
  - {name: chat, host: chat.test, methods: [GET], paths: [/chat], websocket: true, intercept: true}
  - {name: feed, host: feed.test, methods: [GET], paths: [/chat], intercept: true}
`

// wssUpgrade opens an intercepted tunnel to host and asks for a
// websocket upgrade inside it.
func (e *env) wssUpgrade(t *testing.T, host, port string) (int, *bufio.Reader, io.Writer) {
	t.Helper()
	conn, code := e.connect(host + ":" + port)
	if code != 200 {
		t.Fatalf("CONNECT %s = %d", host, code)
	}
	tc := tls.Client(conn, &tls.Config{ServerName: host, RootCAs: e.roots})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("intercepted handshake: %v", err)
	}
	if got := tc.ConnectionState().PeerCertificates[0].Issuer.CommonName; got != e.gwCA.Certificate().Subject.CommonName {
		t.Fatalf("leaf issued by %q, want the gateway CA", got)
	}
	_, _ = io.WriteString(tc, "GET /chat HTTP/1.1\r\nHost: "+host+":"+port+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(tc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, br, tc
}

func TestInterceptedWebSocketPerRule(t *testing.T) {
	e := newEnv(t, interceptWSPolicy, nil)
	e.name("chat.test")
	e.name("feed.test")
	port := e.httpsUpstream(http.HandlerFunc(wsUpstream))
	code, br, w := e.wssUpgrade(t, "chat.test", port)
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("wss upgrade on chat = %d", code)
	}
	_, _ = io.WriteString(w, "hi\n")
	if line, err := br.ReadString('\n'); err != nil || line != "hi\n" {
		t.Fatalf("echo %q %v", line, err)
	}
	if code, _, _ := e.wssUpgrade(t, "feed.test", port); code != http.StatusForbidden {
		t.Fatalf("wss upgrade on feed = %d, want 403", code)
	}
	if ev := e.events.find(t, StageTLS, "feed.test"); ev.Kind != EgressDenied || ev.Rule != "feed" || ev.Path != "/chat" {
		t.Fatalf("event %+v", ev)
	}
}

func TestGrantThroughProxyIsPerAgent(t *testing.T) {
	e := newEnv(t, "defaults: false\n", nil)
	e.name("web.test")
	port := e.httpsUpstream(http.HandlerFunc(hello))
	gs := policy.NewGrantSet(nil)
	e.gw.cfg.Grants = gs // before any request: the config is read-only while serving
	if _, code := e.connect("web.test:" + port); code != http.StatusForbidden {
		t.Fatalf("before grant = %d", code)
	}
	if _, err := gs.Add("clawker.proj.other", "web.test", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, code := e.connect("web.test:" + port); code != http.StatusForbidden {
		t.Fatalf("another agent's grant = %d", code)
	}
	if _, err := gs.Add(testAgent.Name, "web.test", time.Minute); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, e.client(), "GET", "https://web.test:"+port+"/g"); code != 200 || body != "hello GET /g" {
		t.Fatalf("with grant = %d %q", code, body)
	}
	var seen bool
	for _, ev := range e.events.all() {
		seen = seen || ev.Stage == StageConnect && ev.Kind == EgressAllowed && ev.Rule == "bypass:web.test" && ev.RuleList == policy.ListBypass
	}
	if !seen {
		t.Fatalf("no bypass-attributed event in %+v", e.events.all())
	}
}

func TestBadTargetsAndNoCA(t *testing.T) {
	e := newEnv(t, interceptWSPolicy+"  - {name: web, host: web.test}\n", nil)
	e.gw.cfg.CA = nil // before any request: the config is read-only while serving
	for _, target := range []string{"web.test:0", "web.test", ":443", "web.test:x"} {
		if _, code := e.connect(target); code != http.StatusBadRequest {
			t.Fatalf("CONNECT %q = %d, want 400", target, code)
		}
	}
	e.name("chat.test")
	if _, code := e.connect("chat.test:443"); code != http.StatusForbidden {
		t.Fatalf("intercept rule without a CA = %d, want 403", code)
	}
}

// A permitted name that resolves into a denied network is not dialed.
func TestResolvedAddressDenied(t *testing.T) {
	e := newEnv(t, "defaults: false\nallow: [{name: rb, host: rebind.test}]\ndeny: [{name: lo, host: 127.0.0.0/8}]\n", nil)
	e.name("rebind.test")
	reached := make(chan struct{}, 4)
	port := e.httpsUpstream(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached <- struct{}{} }))
	hp := e.httpUpstream(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached <- struct{}{} }))
	if _, code := e.connect("rebind.test:" + port); code != http.StatusForbidden {
		t.Fatalf("CONNECT = %d, want 403", code)
	}
	if code, _ := get(t, e.client(), "GET", "http://rebind.test:"+hp+"/"); code != http.StatusForbidden {
		t.Fatalf("plain GET = %d, want 403 (dial refused)", code)
	}
	ev := e.events.find(t, StageDial, "rebind.test")
	if ev.Kind != EgressDenied || ev.Rule != "lo" {
		t.Fatalf("dial event %+v", ev)
	}
	select {
	case <-reached:
		t.Fatal("upstream reached")
	default:
	}
}
