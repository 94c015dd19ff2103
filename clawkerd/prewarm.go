package clawkerd

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// Pre-warming Register: on a container not yet initialised, clawkerd opens
// its TLS connections to the CP's token endpoint and AgentService as soon
// as it starts (and again when a Session starts, if that warm-up expired),
// so when RegisterRequired arrives the handshakes are already done. Only
// connections are opened: the single-use assertion is still sent only on
// RegisterRequired. Any failure here just means Register dials itself.
const (
	// warmLifetime bounds how long warm connections wait to be claimed:
	// well under the CP token endpoint's read-header timeout (10s), after
	// which it would close the idle connection under us.
	warmLifetime = 5 * time.Second
	// warmDialTimeout bounds one pre-dial (TCP + TLS handshake).
	warmDialTimeout = 5 * time.Second
)

// warmConns is one pre-warm: a pending TLS conn to the token endpoint and
// a connecting gRPC ClientConn to the AgentService. It is owned either by
// its expiry (which closes it) or by the register call that claimed it.
type warmConns struct {
	token *pendingConn
	agent *grpc.ClientConn // nil if it could not be created
	// stop cancels the expiry; false means the expiry already owns w.
	stop func() bool
}

// pendingConn is a dial in flight; done is closed when conn/err are set.
type pendingConn struct {
	addr  string
	done  chan struct{}
	conn  net.Conn
	err   error
	mu    sync.Mutex
	taken bool
}

// dialTLSFunc dials addr and completes the TLS handshake.
type dialTLSFunc func(ctx context.Context, addr string, cfg *tls.Config) (net.Conn, error)

func dialTLS(ctx context.Context, addr string, cfg *tls.Config) (net.Conn, error) {
	d := &tls.Dialer{Config: cfg}
	return d.DialContext(ctx, "tcp", addr)
}

// tokenTLSConfig is the token endpoint's client posture. HTTP/1.1 only: a
// token exchange is one request, and a pre-dialed conn must be usable by
// http.Transport without an HTTP/2 preface of its own.
func tokenTLSConfig(base *tls.Config) *tls.Config {
	c := base.Clone()
	c.NextProtos = []string{"http/1.1"}
	return c
}

// tokenAddr is host:port of the token URL, as http.Transport dials it.
func tokenAddr(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("token URL: %w", err)
	}
	if u.Scheme != "https" || u.Hostname() == "" {
		return "", fmt.Errorf("token URL %q: want https://host[:port]/path", raw)
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "443"), nil
	}
	return u.Host, nil
}

// prewarm starts a warm-up unless Register is done, in flight, or already
// warmed. ctx is the server's lifetime: its end closes everything.
func (r *registrar) prewarm(ctx context.Context) {
	if !r.mu.TryLock() {
		return // a register call is in flight and dials for itself
	}
	defer r.mu.Unlock()
	if r.done || r.warm != nil || r.cfg.CPAgentAddr == "" || r.cfg.CPTokenURL == "" || ctx.Err() != nil {
		return
	}
	addr, err := tokenAddr(r.cfg.CPTokenURL)
	if err != nil {
		r.log.Warn().Str("event", "register_prewarm_failed").Err(err).Msg("register pre-warm skipped")
		return
	}
	tlsCfg := ClientTLSConfig(r.cfg.Cert, r.cfg.CAPool)
	pc := &pendingConn{addr: addr, done: make(chan struct{})}
	go func() {
		defer close(pc.done)
		defer recoverLog(r.log, "register_prewarm")
		dctx, cancel := context.WithTimeout(ctx, warmDialTimeout)
		defer cancel()
		pc.conn, pc.err = r.dial(dctx, addr, tokenTLSConfig(tlsCfg))
	}()
	w := &warmConns{token: pc}
	if cc, err := r.agentConn(tlsCfg); err != nil {
		r.log.Warn().Str("event", "register_prewarm_failed").Str("target", "agent_service").Err(err).Msg("agent service pre-dial failed")
	} else {
		cc.Connect()
		w.agent = cc
	}
	wctx, cancel := context.WithTimeout(ctx, warmLifetime)
	w.stop = context.AfterFunc(wctx, func() {
		defer cancel()
		defer recoverLog(r.log, "register_prewarm_expiry")
		r.mu.Lock()
		if r.warm == w {
			r.warm = nil
		}
		r.mu.Unlock()
		w.release()
	})
	r.warm = w
	r.log.Debug().Str("event", "register_prewarm_started").Msg("pre-dialing control plane for Register")
}

// claimWarm takes the warm-up for a register call (r.mu held); nil when
// there is none or its expiry already owns it.
func (r *registrar) claimWarm() *warmConns {
	w := r.warm
	r.warm = nil
	if w == nil || !w.stop() {
		return nil
	}
	return w
}

// takeToken hands the pre-dialed token conn to http.Transport once, if it
// is for addr and its dial succeeded. A nil conn means dial normally; err
// is then the pre-dial's failure, if that is why. Nil-safe.
func (w *warmConns) takeToken(ctx context.Context, addr string) (net.Conn, error) {
	if w == nil || w.token.addr != addr {
		return nil, nil
	}
	pc := w.token
	select {
	case <-pc.done:
	case <-ctx.Done():
		return nil, nil
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.taken {
		return nil, nil
	}
	if pc.err != nil {
		return nil, pc.err
	}
	pc.taken = true
	return pc.conn, nil
}

// release closes whatever of w nobody took. It waits for the pending dial,
// which its own timeout and the server context bound.
func (w *warmConns) release() {
	if w.agent != nil {
		_ = w.agent.Close()
	}
	pc := w.token
	<-pc.done
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if !pc.taken && pc.conn != nil {
		pc.taken = true
		_ = pc.conn.Close()
	}
}
