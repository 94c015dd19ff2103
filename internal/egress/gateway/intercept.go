package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/clawker/clawker/internal/egress/policy"
)

// intercept terminates the agent's TLS with a leaf for the CONNECT host
// minted by the install CA, then decides and forwards each HTTP request
// inside, re-encrypting upstream. HTTP/1.1 only (ALPN offers no h2), so
// every request is visible.
func (p *Proxy) intercept(ctx context.Context, client net.Conn, c caller, host string, port uint16) {
	_, ipErr := netip.ParseAddr(host)
	conf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni := policy.NormalizeHost(h.ServerName)
			if sni != host && !(sni == "" && ipErr == nil) {
				p.g.record(ctx, StageSNI, c, policy.Request{Host: sni, Port: port},
					policy.Decision{Rule: policy.RuleRef{List: "sni", Index: -1, Name: "sni-mismatch"}, Reason: "SNI differs from CONNECT host " + host})
				return nil, errors.New("sni mismatch")
			}
			return nil, nil
		},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return p.g.cfg.CA.Leaf(host) },
	}
	tc := tls.Server(client, conf)
	hctx, cancel := context.WithTimeout(ctx, p.handshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		_ = tc.Close()
		p.g.log.Info().Str("event", "egress_intercept_handshake_failed").Str("agent", c.agent.Name).
			Str("host", host).Err(err).Msg("agent TLS handshake failed")
		return
	}
	// One upstream transport per agent connection: its pool never mixes
	// callers.
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: p.g.cfg.UpstreamRoots, ServerName: host, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	defer tr.CloseIdleConnections()
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqHost, _, _ := splitHostPort(r.Host, port)
		req := policy.Request{Host: host, Port: port, Method: r.Method, Path: r.URL.Path, WebSocket: isWebSocket(r)}
		if reqHost != host {
			p.g.record(r.Context(), StageTLS, c, req, policy.Decision{Rule: policy.RuleRef{List: "host", Index: -1, Name: "host-mismatch"}, Reason: "Host header differs from CONNECT host"})
			refuse(w)
			return
		}
		if d := p.g.decide(r.Context(), StageTLS, c, req); !d.Allowed {
			refuse(w)
			return
		}
		p.forward(w, r, c, host, port, "https", tr)
	})
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          nil,
	}
	_ = srv.Serve(newOneConnListener(tc))
}

// oneConnListener serves exactly one connection and returns from
// Accept only when that connection has been closed, so Serve's return
// marks the end of the agent's connection.
type oneConnListener struct {
	conn   net.Conn
	mu     sync.Mutex
	served bool
	closed chan struct{}
}

func newOneConnListener(c net.Conn) *oneConnListener {
	l := &oneConnListener{closed: make(chan struct{})}
	l.conn = &notifyConn{Conn: c, done: l.closed}
	return l
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if !l.served {
		l.served = true
		l.mu.Unlock()
		return l.conn, nil
	}
	l.mu.Unlock()
	<-l.closed
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

type notifyConn struct {
	net.Conn
	once sync.Once
	done chan struct{}
}

func (c *notifyConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}
