package gateway

import (
	"bufio"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

const proxyPolicy = `
defaults: false
allow:
  - {name: web, host: web.test}
  - {name: wild, host: "*.cdn.test"}
  - {name: api, host: api.test, methods: [GET], paths: [/v1/read], intercept: true}
  - {name: ws-yes, host: ws.test, websocket: true}
  - {name: ws-no, host: nows.test}
  - {name: git, host: git.test}
deny:
  - {name: bad, host: bad.cdn.test}
`

func hello(w http.ResponseWriter, r *http.Request) {
	_, _ = io.WriteString(w, "hello "+r.Method+" "+r.URL.Path)
}

func TestHTTPSViaConnectAllowed(t *testing.T) {
	e := newEnv(t, proxyPolicy, nil)
	e.name("web.test")
	port := e.httpsUpstream(http.HandlerFunc(hello))
	code, body := get(t, e.client(), "GET", "https://web.test:"+port+"/x")
	if code != 200 || body != "hello GET /x" {
		t.Fatalf("got %d %q", code, body)
	}
	ev := e.events.find(t, StageConnect, "web.test")
	if ev.Kind != EgressAllowed || ev.Rule != "web" || ev.RuleList != "allow" || ev.Agent != testAgent ||
		ev.Port == 0 || ev.PeerIP != loopback || ev.Method != "" {
		t.Fatalf("connect event %+v", ev)
	}
	if sni := e.events.find(t, StageSNI, "web.test"); sni.Kind != EgressAllowed {
		t.Fatalf("sni event %+v", sni)
	}
	if n := testutil.ToFloat64(e.gw.cfg.Decisions.WithLabelValues(StageConnect, "allowed", "web")); n != 1 {
		t.Fatalf("allowed connect counter = %v, want 1", n)
	}
}

func TestDeniedHostRefused(t *testing.T) {
	e := newEnv(t, proxyPolicy, nil)
	e.name("bad.cdn.test")
	e.name("other.test")
	port := e.httpsUpstream(http.HandlerFunc(hello))
	for _, host := range []string{"bad.cdn.test", "other.test", "127.0.0.1"} {
		_, code := e.connect(host + ":" + port)
		if code != http.StatusForbidden {
			t.Fatalf("CONNECT %s = %d, want 403", host, code)
		}
	}
	ev := e.events.find(t, StageConnect, "bad.cdn.test")
	if ev.Kind != EgressDenied || ev.Rule != "bad" || ev.Agent.Project != "proj" {
		t.Fatalf("deny event %+v", ev)
	}
	if ev := e.events.find(t, StageConnect, "other.test"); ev.Rule != "default-deny" || ev.RuleIndex != -1 {
		t.Fatalf("default deny event %+v", ev)
	}
	if n := testutil.ToFloat64(e.gw.cfg.Decisions.WithLabelValues(StageConnect, "denied", "bad")); n != 1 {
		t.Fatalf("denied counter = %v", n)
	}
	// Plain HTTP to a denied host is refused the same way.
	hp := e.httpUpstream(http.HandlerFunc(hello))
	if code, body := get(t, e.client(), "GET", "http://other.test:"+hp+"/"); code != 403 || !strings.Contains(body, "egress denied") {
		t.Fatalf("plain denied = %d %q", code, body)
	}
}

func TestConnectWithDeniedSNIRefused(t *testing.T) {
	e := newEnv(t, proxyPolicy, nil)
	e.name("a.cdn.test")
	reached := make(chan struct{}, 1)
	port := e.httpsUpstream(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached <- struct{}{} }))
	for _, sni := range []string{"bad.cdn.test", "web.test", ""} {
		conn, code := e.connect("a.cdn.test:" + port)
		if code != 200 {
			t.Fatalf("CONNECT allowed name = %d", code)
		}
		tc := tls.Client(conn, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err := tc.Handshake(); err == nil {
			t.Fatalf("TLS with SNI %q through a tunnel to a.cdn.test succeeded", sni)
		}
	}
	ev := e.events.find(t, StageSNI, "bad.cdn.test")
	if ev.Kind != EgressDenied || ev.Rule != "sni-mismatch" {
		t.Fatalf("sni event %+v", ev)
	}
	select {
	case <-reached:
		t.Fatal("a request reached the upstream")
	default:
	}
}

func TestInterceptMethodPath(t *testing.T) {
	e := newEnv(t, proxyPolicy, nil)
	e.name("api.test")
	port := e.httpsUpstream(http.HandlerFunc(hello))
	c := e.client()
	if code, body := get(t, c, "GET", "https://api.test:"+port+"/v1/read/42"); code != 200 || body != "hello GET /v1/read/42" {
		t.Fatalf("allowed GET = %d %q", code, body)
	}
	ev := e.events.find(t, StageTLS, "api.test")
	if ev.Kind != EgressAllowed || ev.Method != "GET" || ev.Path != "/v1/read/42" || ev.Rule != "api" {
		t.Fatalf("tls event %+v", ev)
	}
	for _, tc := range []struct{ method, path string }{{"POST", "/v1/read/42"}, {"GET", "/v1/write"}, {"GET", "/v1/read/../../admin"}} {
		if code, _ := get(t, c, tc.method, "https://api.test:"+port+tc.path); code != 403 {
			t.Fatalf("%s %s = %d, want 403", tc.method, tc.path, code)
		}
	}
	var denied int
	for _, ev := range e.events.all() {
		if ev.Stage == StageTLS && ev.Kind == EgressDenied {
			denied++
		}
	}
	if denied != 3 {
		t.Fatalf("denied tls events = %d, want 3", denied)
	}
}

func TestInterceptRefusesSNIMismatch(t *testing.T) {
	e := newEnv(t, proxyPolicy, nil)
	e.name("api.test")
	port := e.httpsUpstream(http.HandlerFunc(hello))
	conn, code := e.connect("api.test:" + port)
	if code != 200 {
		t.Fatalf("CONNECT = %d", code)
	}
	tc := tls.Client(conn, &tls.Config{ServerName: "web.test", RootCAs: e.roots})
	if err := tc.Handshake(); err == nil {
		t.Fatal("intercepting handshake accepted a different SNI")
	}
	if ev := e.events.find(t, StageSNI, "web.test"); ev.Kind != EgressDenied {
		t.Fatalf("event %+v", ev)
	}
}

func TestSSHStyleTunnel(t *testing.T) {
	e := newEnv(t, proxyPolicy, nil)
	e.name("git.test")
	conn, code := e.connect("git.test:" + echoTCP(t))
	if code != 200 {
		t.Fatalf("CONNECT = %d", code)
	}
	br := bufio.NewReader(conn)
	banner, err := br.ReadString('\n')
	if err != nil || banner != "SSH-2.0-fake\r\n" {
		t.Fatalf("banner %q %v", banner, err)
	}
	if _, err := io.WriteString(conn, "SSH-2.0-client\r\n"); err != nil {
		t.Fatal(err)
	}
	if echo, err := br.ReadString('\n'); err != nil || echo != "SSH-2.0-client\r\n" {
		t.Fatalf("echo %q %v", echo, err)
	}
}

// wsUpstream completes a websocket handshake and echoes one line.
func wsUpstream(w http.ResponseWriter, r *http.Request) {
	if !isWebSocket(r) {
		http.Error(w, "not ws", 400)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	line, _ := brw.ReadString('\n')
	_, _ = io.WriteString(conn, line)
}

func TestWebSocketPerRule(t *testing.T) {
	e := newEnv(t, proxyPolicy, nil)
	e.name("ws.test")
	e.name("nows.test")
	port := e.httpUpstream(http.HandlerFunc(wsUpstream))
	upgrade := func(host string) (int, *bufio.Reader, io.Writer) {
		conn, _ := e.connectRaw()
		target := host + ":" + port
		_, _ = io.WriteString(conn, "GET http://"+target+"/chat HTTP/1.1\r\nHost: "+target+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, br, conn
	}
	code, br, w := upgrade("ws.test")
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("allowed upgrade = %d", code)
	}
	_, _ = io.WriteString(w, "ping\n")
	if line, err := br.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("echo %q %v", line, err)
	}
	if code, _, _ := upgrade("nows.test"); code != http.StatusForbidden {
		t.Fatalf("upgrade on a rule without websocket = %d, want 403", code)
	}
	ev := e.events.find(t, StageHTTP, "nows.test")
	if ev.Kind != EgressDenied || ev.Rule != "ws-no" || ev.Method != "GET" || ev.Path != "/chat" {
		t.Fatalf("ws deny event %+v", ev)
	}
	// The same rule still serves ordinary requests.
	if code, _ := get(t, e.client(), "GET", "http://nows.test:"+port+"/"); code != 400 {
		t.Fatalf("plain request on ws-no = %d, want the upstream's 400", code)
	}
}

func TestUntrustedPeerDenied(t *testing.T) {
	for name, attr := range map[string]Attributor{
		"untrusted": fakeAttributor{agent: testAgent, trusted: false},
		"unknown":   fakeAttributor{err: io.ErrUnexpectedEOF},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, proxyPolicy, attr)
			e.name("web.test")
			port := e.httpsUpstream(http.HandlerFunc(hello))
			if _, code := e.connect("web.test:" + port); code != http.StatusForbidden {
				t.Fatalf("CONNECT from %s peer = %d", name, code)
			}
			hp := e.httpUpstream(http.HandlerFunc(hello))
			if code, _ := get(t, e.client(), "GET", "http://web.test:"+hp+"/"); code != 403 {
				t.Fatalf("plain from %s peer = %d", name, code)
			}
			ev := e.events.find(t, StageConnect, "web.test")
			if ev.Kind != EgressDenied || ev.Rule != "unattributed" {
				t.Fatalf("event %+v", ev)
			}
		})
	}
}
