package gateway

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/clawker/clawker/internal/egress/policy"
)

// Proxy is the agents' HTTP(S) forward proxy (their HTTP_PROXY and
// HTTPS_PROXY). It is an http.Handler for a plain net/http server:
// absolute-form requests are forwarded, CONNECT is tunnelled.
type Proxy struct {
	g *Gateway
	// hijackTimeout bounds the TLS peek and interception handshake.
	handshakeTimeout time.Duration
}

// NewProxy returns the forward proxy handler.
func NewProxy(g *Gateway) *Proxy {
	return &Proxy{g: g, handshakeTimeout: 10 * time.Second}
}

// deniedBody is the one generic refusal; the reason goes to the log.
const deniedBody = "egress denied by clawker policy\n"

func refuse(w http.ResponseWriter) { http.Error(w, deniedBody, http.StatusForbidden) }

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	peer := peerOf(remoteAddr(r))
	if r.Method == http.MethodConnect {
		p.serveConnect(w, r, peer)
		return
	}
	if !r.URL.IsAbs() || r.URL.Scheme != "http" {
		http.Error(w, "clawker egress: only absolute http:// requests and CONNECT are proxied\n", http.StatusBadRequest)
		return
	}
	host, port, ok := splitHostPort(r.URL.Host, 80)
	if !ok {
		http.Error(w, "clawker egress: bad host\n", http.StatusBadRequest)
		return
	}
	req := policy.Request{Host: host, Port: port, Method: r.Method, Path: r.URL.Path, WebSocket: isWebSocket(r)}
	c, err := p.g.attribute(r.Context(), StageHTTP, peer, req)
	if err != nil {
		refuse(w)
		return
	}
	if d := p.g.decide(r.Context(), StageHTTP, c, req); !d.Allowed {
		refuse(w)
		return
	}
	// One upstream connection per request: a pooled connection was
	// checked against another agent's policy.
	p.forward(w, r, c, host, port, "http", &http.Transport{DisableKeepAlives: true})
}

// forward relays r upstream through a reverse proxy whose dialer
// enforces the caller's IP/CIDR deny rules. Upgrades (WebSocket) are
// relayed by httputil.ReverseProxy once the policy allowed them.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, c caller, host string, port uint16, scheme string, tr *http.Transport) {
	tr.Proxy = nil
	tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		return p.g.dial(ctx, StageDial, c, host, port)
	}
	tr.ResponseHeaderTimeout = 60 * time.Second
	rp := &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = scheme
			pr.Out.URL.Host = net.JoinHostPort(host, itoa(port))
			pr.Out.Host = pr.In.Host
			pr.Out.RequestURI = ""
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.g.log.Info().Str("event", "egress_upstream_failed").Str("agent", c.agent.Name).
				Str("host", host).Err(err).Msg("upstream request failed")
			if errors.Is(err, errDenied) {
				refuse(w)
				return
			}
			w.WriteHeader(http.StatusBadGateway)
		},
		FlushInterval: -1,
	}
	rp.ServeHTTP(w, r)
}

// isWebSocket reports an HTTP/1.1 upgrade to websocket.
func isWebSocket(r *http.Request) bool {
	return httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") &&
		strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// remoteAddr is the TCP peer of r (RemoteAddr is a string on requests).
func remoteAddr(r *http.Request) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", r.RemoteAddr)
	if err != nil {
		return nil
	}
	return a
}
