package token

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/clawker/clawker/internal/logger"
)

// Refusal budget per peer IP: a peer that keeps failing authentication is
// answered with the generic refusal and no work (no signature check, no
// store or Docker call) once it has spent its burst. Honest agents are
// never refused, so they never touch it; the hostile-peer matrix sends ~20
// refusals from one container at exec speed, well inside it.
const (
	refusalBurst     = 20
	refusalRate      = rate.Limit(5) // per second
	maxRefusalPeers  = 4096
	refusalLogPeriod = 10 * time.Second
	// refusalLogBurst lines per peer and reason per period are written in
	// full; the rest are counted into the next line.
	refusalLogBurst = 5
)

// peerRefusals rate-limits refusals per peer IP and throttles their log
// lines. Only refused peers get an entry, and the table is bounded.
type peerRefusals struct {
	mu       sync.Mutex
	peers    map[netip.Addr]*rate.Limiter
	throttle *logger.Throttle
	now      func() time.Time

	limited atomic.Uint64
}

func newPeerRefusals() *peerRefusals {
	return &peerRefusals{peers: map[netip.Addr]*rate.Limiter{}, throttle: logger.NewThrottle(refusalLogPeriod, refusalLogBurst, 0), now: time.Now}
}

// limited reports whether ip has spent its refusal budget: such a peer is
// refused up front. It counts the refusal.
func (p *peerRefusals) exhausted(ip netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.peers[ip]
	if !ok || l.TokensAt(p.now()) >= 1 {
		return false
	}
	// Spend on the up-front refusal too, so hammering keeps it shut.
	l.AllowN(p.now(), 1)
	p.limited.Add(1)
	return true
}

// charge records one refusal of ip.
func (p *peerRefusals) charge(ip netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.peers[ip]
	if !ok {
		if len(p.peers) >= maxRefusalPeers {
			p.expireLocked()
		}
		if len(p.peers) >= maxRefusalPeers {
			return
		}
		l = rate.NewLimiter(refusalRate, refusalBurst)
		p.peers[ip] = l
	}
	l.AllowN(p.now(), 1)
}

// expireLocked drops peers whose budget has refilled: they are
// indistinguishable from a peer never refused.
func (p *peerRefusals) expireLocked() {
	now := p.now()
	for ip, l := range p.peers {
		if l.TokensAt(now) >= refusalBurst {
			delete(p.peers, ip)
		}
	}
}

// logAllowed reports whether a refusal line for (event, ip) may be written
// and how many were suppressed since the last one.
func (p *peerRefusals) logAllowed(event string, ip netip.Addr) (bool, uint64) {
	return p.throttle.Allow(event + "|" + ip.String())
}

// RateLimited returns how many requests were refused up front because
// their peer had spent its refusal budget.
func (p *peerRefusals) RateLimited() uint64 { return p.limited.Load() }

func addrIP(remoteAddr string) netip.Addr {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
