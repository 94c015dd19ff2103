package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"crypto/tls"

	"github.com/clawker/clawker/internal/egress/policy"
)

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

// serveConnect decides a CONNECT host:port, then either tunnels bytes
// (checking the SNI of a TLS ClientHello against the CONNECT host) or,
// for rules that need it, intercepts TLS.
func (p *Proxy) serveConnect(w http.ResponseWriter, r *http.Request, peer netip.Addr) {
	host, port, ok := splitHostPort(r.Host, 0)
	if !ok {
		http.Error(w, "clawker egress: CONNECT needs host:port\n", http.StatusBadRequest)
		return
	}
	req := policy.Request{Host: host, Port: port}
	ctx := r.Context()
	c, err := p.g.attribute(ctx, StageConnect, peer, req)
	if err != nil {
		refuse(w)
		return
	}
	d := p.g.decide(ctx, StageConnect, c, req)
	if !d.Allowed || d.Intercept && p.g.cfg.CA == nil {
		if d.Allowed {
			p.g.record(ctx, StageConnect, c, req, policy.Decision{Rule: d.Rule, Reason: "interception needed but no CA configured"})
		}
		refuse(w)
		return
	}
	var upstream net.Conn
	if !d.Intercept {
		if upstream, err = p.g.dial(ctx, StageDial, c, host, port); err != nil {
			p.g.log.Info().Str("event", "egress_upstream_failed").Str("agent", c.agent.Name).
				Str("host", host).Err(err).Msg("tunnel dial failed")
			if errors.Is(err, errDenied) {
				refuse(w)
			} else {
				w.WriteHeader(http.StatusBadGateway)
			}
			return
		}
	}
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		closeIf(upstream)
		return
	}
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection Established\r\n\r\n"); err != nil {
		client.Close()
		closeIf(upstream)
		return
	}
	bc := &bufferedConn{Conn: client, r: brw.Reader}
	// The tunnel outlives the request: it has its own context.
	tctx := context.WithoutCancel(ctx)
	if d.Intercept {
		p.intercept(tctx, bc, c, host, port)
		return
	}
	p.tunnel(tctx, bc, upstream, c, host, port)
}

// tunnel relays bytes. If the client opens with a TLS record, its
// ClientHello is read first: the SNI must equal the CONNECT host (or be
// empty for an IP host) and be allowed itself, else both ends close.
// Upstream bytes flow from the start, so server-first protocols work.
func (p *Proxy) tunnel(ctx context.Context, client *bufferedConn, upstream net.Conn, c caller, host string, port uint16) {
	defer client.Close()
	defer upstream.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(client.Conn, upstream)
		closeWrite(client.Conn)
	}()
	_ = client.SetReadDeadline(time.Now().Add(p.handshakeTimeout))
	first, err := client.r.Peek(1)
	if err == nil && first[0] == 0x16 { // TLS handshake record
		hello, raw, herr := peekClientHello(client.r)
		if herr != nil || !p.sniOK(ctx, c, host, port, hello) {
			return
		}
		if _, err := upstream.Write(raw); err != nil {
			return
		}
	} else if err != nil && !errors.Is(err, io.EOF) && !isTimeout(err) {
		return
	}
	_ = client.SetReadDeadline(time.Time{})
	_, _ = relay(upstream, client)
	closeWrite(upstream)
	<-done
}

// relay copies the client's bytes to upstream: first what the hijacked
// bufio.Reader already holds, then straight from the raw connection, so
// that io.Copy between two *net.TCPConn takes the kernel's splice path
// instead of copying every byte through the bufio.Reader and user space.
func relay(upstream net.Conn, client *bufferedConn) (int64, error) {
	var n int64
	if b := client.r.Buffered(); b > 0 {
		held, _ := client.r.Peek(b) // b bytes are buffered: Peek cannot fail
		m, err := upstream.Write(held)
		n += int64(m)
		if err != nil {
			return n, err
		}
		_, _ = client.r.Discard(m)
	}
	m, err := io.Copy(upstream, client.Conn)
	return n + m, err
}

// sniOK decides the ClientHello's server name and records a refusal.
func (p *Proxy) sniOK(ctx context.Context, c caller, host string, port uint16, sni string) bool {
	sni = policy.NormalizeHost(sni)
	_, hostIsIP := netip.ParseAddr(host)
	if sni == "" && hostIsIP == nil {
		return true
	}
	req := policy.Request{Host: sni, Port: port}
	if sni != host {
		p.g.record(ctx, StageSNI, c, req, policy.Decision{Rule: policy.RuleRef{List: "sni", Index: -1, Name: "sni-mismatch"}, Reason: "SNI differs from CONNECT host " + host})
		return false
	}
	d := p.g.decide(ctx, StageSNI, c, req)
	return d.Allowed && !d.Intercept
}

// errPeeked stops the handshake once the ClientHello has been seen.
var errPeeked = errors.New("client hello peeked")

// peekClientHello lets crypto/tls parse the ClientHello from r without
// answering it, and returns the SNI and the raw bytes consumed, which
// the caller replays upstream.
func peekClientHello(r io.Reader) (string, []byte, error) {
	rec := &recordingConn{r: r}
	var sni string
	seen := false
	err := tls.Server(rec, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		sni, seen = h.ServerName, true
		return nil, errPeeked
	}}).Handshake()
	if !seen {
		return "", nil, errors.Join(errors.New("no ClientHello"), err)
	}
	return sni, rec.buf.Bytes(), nil
}

// recordingConn is a read-only net.Conn that keeps what was read.
type recordingConn struct {
	net.Conn // nil: only the methods below are called by tls.Server
	r        io.Reader
	buf      bytes.Buffer
}

func (c *recordingConn) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.buf.Write(b[:n])
	return n, err
}
func (c *recordingConn) Write(b []byte) (int, error)      { return 0, io.ErrClosedPipe }
func (c *recordingConn) Close() error                     { return nil }
func (c *recordingConn) SetDeadline(time.Time) error      { return nil }
func (c *recordingConn) SetReadDeadline(time.Time) error  { return nil }
func (c *recordingConn) SetWriteDeadline(time.Time) error { return nil }
func (c *recordingConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *recordingConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

// bufferedConn reads through the hijacked bufio.Reader so bytes the
// HTTP server already buffered are not lost.
type bufferedConn struct {
	net.Conn
	r    *bufio.Reader
	once sync.Once
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }
func (c *bufferedConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() { err = c.Conn.Close() })
	return err
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

func closeIf(c net.Conn) {
	if c != nil {
		_ = c.Close()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
