// Package netlimit bounds what one network peer can hold open on a
// listener: a per-remote-IP connection cap and an optional admission
// filter on the remote address. Refused connections are closed before any
// TLS or HTTP work is done for them.
package netlimit

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clawker/clawker/internal/logger"
)

// Refusal reasons, as logged and counted.
const (
	ReasonPeerCap    = "per_peer_cap"
	ReasonNotAllowed = "peer_not_allowed"
)

// Options configures a Listener.
type Options struct {
	// Name labels log lines and counters (e.g. "agent", "token").
	Name string
	// MaxPerPeer caps concurrent connections per remote IP; <= 0 means
	// no cap.
	MaxPerPeer int
	// Allow, when set, admits only remote IPs it returns true for.
	Allow func(netip.Addr) bool
	// OnRefuse, when set, is called once per refused connection (metrics).
	OnRefuse func(listener, reason string)
	Log      *logger.Logger
	// Throttle bounds refusal log lines; a nil Throttle gets one line per
	// peer and reason per 10 s.
	Throttle *logger.Throttle
}

// Listener wraps a net.Listener with per-peer bounds. Accept never
// returns a refused connection: it closes it and keeps accepting.
type Listener struct {
	net.Listener
	opts Options
	log  *logger.Logger

	mu    sync.Mutex
	conns map[netip.Addr]int

	refused atomic.Uint64
}

// Wrap returns ln bounded by opts.
func Wrap(ln net.Listener, opts Options) *Listener {
	if opts.Throttle == nil {
		opts.Throttle = logger.NewThrottle(10*time.Second, 1, 0)
	}
	return &Listener{Listener: ln, opts: opts, log: logger.OrNop(opts.Log), conns: map[netip.Addr]int{}}
}

// Refused returns how many connections were refused so far.
func (l *Listener) Refused() uint64 { return l.refused.Load() }

// Open returns how many connections ip holds open now.
func (l *Listener) Open(ip netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns[ip]
}

// Accept returns the next admitted connection.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		if reason := l.admit(ip); reason != "" {
			// Account before closing, so whoever sees the close also sees
			// the refusal counted and logged.
			l.refuse(ip, reason)
			_ = c.Close()
			continue
		}
		return &conn{Conn: c, release: func() { l.release(ip) }}, nil
	}
}

// admit reserves a slot for ip, or returns why it is refused.
func (l *Listener) admit(ip netip.Addr) string {
	if l.opts.Allow != nil && (!ip.IsValid() || !l.opts.Allow(ip)) {
		return ReasonNotAllowed
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.opts.MaxPerPeer > 0 && l.conns[ip] >= l.opts.MaxPerPeer {
		return ReasonPeerCap
	}
	l.conns[ip]++
	return ""
}

func (l *Listener) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns[ip] <= 1 {
		delete(l.conns, ip)
		return
	}
	l.conns[ip]--
}

func (l *Listener) refuse(ip netip.Addr, reason string) {
	l.refused.Add(1)
	if l.opts.OnRefuse != nil {
		l.opts.OnRefuse(l.opts.Name, reason)
	}
	if ok, n := l.opts.Throttle.Allow(l.opts.Name + "|" + reason + "|" + ip.String()); ok {
		l.log.Warn().Str("event", "conn_refused").Str("listener", l.opts.Name).Str("reason", reason).
			Str("peer", ip.String()).Int("max_per_peer", l.opts.MaxPerPeer).Uint64("suppressed", n).
			Msg("connection refused before TLS")
	}
}

func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// conn releases its peer slot exactly once, on the first Close.
type conn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
