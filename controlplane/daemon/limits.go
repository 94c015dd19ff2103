package daemon

import (
	"bufio"
	"context"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mobyclient "github.com/moby/moby/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/clawker/clawker/controlplane/peerid"
	"github.com/clawker/clawker/controlplane/token"
	"github.com/clawker/clawker/internal/logger"
	"github.com/clawker/clawker/internal/netlimit"
)

// Per-peer connection caps, by listener. An honest clawkerd holds at most
// two conns per surface (a pre-dialed one and a redial), so 16 leaves wide
// room and still stops one container from holding thousands. Every host
// connection to a published port (admin, health) arrives from the same
// network gateway address, so those caps bound the host as a whole: admin
// stays far above the CLI fan-out the bench drives (100 concurrent execs).
var maxConnsPerPeer = map[string]int{
	"agent":  16,
	"token":  16,
	"health": 32,
	"admin":  1024,
}

// gRPC limits. Register is one unary call, so an agent conn never needs
// many streams; admin conns carry one CLI command each (Exec: one stream).
const (
	agentMaxConcurrentStreams = 8
	adminMaxConcurrentStreams = 64
)

// Idle and age limits (vars: tests shorten them).
var (
	// grpcHandshakeTimeout bounds the TLS handshake of a new conn
	// (gRPC's default is 120 s: a peer could hold many half-open conns).
	grpcHandshakeTimeout = 10 * time.Second
	// agent API: a conn idle this long (no RPC in flight) gets a GOAWAY;
	// any conn is recycled after agentMaxConnAge (+ grace for a call in
	// flight). clawkerd dials afresh for every Register anyway.
	agentMaxConnIdle  = 2 * time.Minute
	agentMaxConnAge   = 10 * time.Minute
	agentMaxConnGrace = 30 * time.Second
	// admin API: idle limit only. Exec and WatchEvents streams are long
	// by design (an interactive shell, `clawker events -f`), and the port
	// is loopback-published behind the CLI cert, so no age limit.
	adminMaxConnIdle = 15 * time.Minute
	// health: /healthz and /metrics are one short GET each.
	healthReadTimeout  = 10 * time.Second
	healthWriteTimeout = 30 * time.Second
	healthIdleTimeout  = 30 * time.Second
)

// maxHeaderBytes caps request headers on the HTTP listeners (token,
// health); net/http's default is 1 MiB.
const maxHeaderBytes = 16 << 10

// keepaliveEnforcement lets clients ping at most every 10 s and only with
// an RPC in flight (clawkerd pings every 20 s); faster pingers get a
// GOAWAY.
var keepaliveEnforcement = keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: false}

func agentServerLimits() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(agentMaxConcurrentStreams),
		grpc.ConnectionTimeout(grpcHandshakeTimeout),
		grpc.KeepaliveEnforcementPolicy(keepaliveEnforcement),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: agentMaxConnIdle, MaxConnectionAge: agentMaxConnAge, MaxConnectionAgeGrace: agentMaxConnGrace,
			Time: time.Minute, Timeout: 20 * time.Second,
		}),
	}
}

func adminServerLimits() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(adminMaxConcurrentStreams),
		grpc.ConnectionTimeout(grpcHandshakeTimeout),
		grpc.KeepaliveEnforcementPolicy(keepaliveEnforcement),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: adminMaxConnIdle, Time: time.Minute, Timeout: 20 * time.Second}),
	}
}

// dosState is the daemon's DoS bookkeeping: refusal counters, the Docker
// calls the peer lookup made, and the token issuer's counters.
type dosState struct {
	mu      sync.Mutex
	refused map[[2]string]uint64 // (listener, reason) → count

	dockerInspects atomic.Uint64
	dockerLists    atomic.Uint64
	issuer         atomic.Pointer[token.Issuer]
	throttle       *logger.Throttle

	// operatorAllow admits peers on the operator-only listeners (health,
	// admin); nil: an operatorFilter on routeFile.
	operatorAllow func(netip.Addr) bool
}

func (s *dosState) countRefusal(listener, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refused == nil {
		s.refused = map[[2]string]uint64{}
	}
	s.refused[[2]string{listener, reason}]++
}

// limitListener bounds ln by its listener name: the per-peer cap, and on
// the operator-only listeners (health, admin) the operator filter.
func (d *Daemon) limitListener(name string, ln net.Listener) net.Listener {
	d.mu.Lock()
	if d.dos.throttle == nil {
		d.dos.throttle = logger.NewThrottle(10*time.Second, 1, 0)
	}
	th := d.dos.throttle
	d.mu.Unlock()
	opts := netlimit.Options{Name: name, MaxPerPeer: maxConnsPerPeer[name], OnRefuse: d.dos.countRefusal,
		Log: d.log.With("subsystem", "netlimit"), Throttle: th}
	// admin serves only the CLI through the loopback-published port: a
	// container on clawker-net has no business there.
	if name == "health" || name == "admin" {
		opts.Allow = d.dos.operatorAllow
		if opts.Allow == nil {
			opts.Allow = newOperatorFilter(routeFile).allow
		}
	}
	return netlimit.Wrap(ln, opts)
}

// routeFile is the kernel's IPv4 routing table of the CP's netns.
const routeFile = "/proc/net/route"

// operatorFilter admits the peers that can only be the operator: loopback
// (a process inside the CP container) and the default gateway. Docker
// reaches a published port from the host through the network's gateway
// address (docker-proxy dials from it; without the proxy, the NAT
// masquerades loopback clients to it), and that address belongs to the
// host's bridge: no container on clawker-net can open a TCP connection
// from it. A container on clawker-net connects from its own address and
// is refused at accept, before any HTTP is read.
type operatorFilter struct {
	path string

	mu     sync.Mutex
	gws    []netip.Addr
	readAt time.Time
}

func newOperatorFilter(path string) *operatorFilter { return &operatorFilter{path: path} }

func (f *operatorFilter) allow(ip netip.Addr) bool {
	if ip.IsLoopback() {
		return true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// Re-read every few seconds: a network reconnect changes the gateway.
	if time.Since(f.readAt) > 5*time.Second {
		f.gws, f.readAt = defaultGateways(f.path), time.Now()
	}
	for _, g := range f.gws {
		if g == ip {
			return true
		}
	}
	return false
}

// defaultGateways parses the gateways of the default routes in a
// /proc/net/route file (hex, host byte order: little-endian on every
// platform the CP image is built for). A read error yields none: only
// loopback is admitted, which fails closed.
func defaultGateways(path string) []netip.Addr {
	fh, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer fh.Close()
	var out []netip.Addr
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[1] != "00000000" {
			continue
		}
		b, err := hex.DecodeString(f[2])
		if err != nil || len(b) != 4 {
			continue
		}
		ip := netip.AddrFrom4([4]byte{b[3], b[2], b[1], b[0]})
		if !ip.IsUnspecified() {
			out = append(out, ip)
		}
	}
	return out
}

// countingPeerClient counts the Docker calls the peer lookup makes, so
// /metrics shows what unauthenticated traffic costs the engine.
type countingPeerClient struct {
	mobyclient.APIClient
	s *dosState
}

func (c countingPeerClient) ContainerList(ctx context.Context, o mobyclient.ContainerListOptions) (mobyclient.ContainerListResult, error) {
	c.s.dockerLists.Add(1)
	return c.APIClient.ContainerList(ctx, o)
}

func (c countingPeerClient) ContainerInspect(ctx context.Context, id string, o mobyclient.ContainerInspectOptions) (mobyclient.ContainerInspectResult, error) {
	c.s.dockerInspects.Add(1)
	return c.APIClient.ContainerInspect(ctx, id, o)
}

// peerLookupClient is the Docker client the peer lookup gets: counted.
func (d *Daemon) peerLookupClient(docker mobyclient.APIClient) peerid.DockerClient {
	return countingPeerClient{APIClient: docker, s: &d.dos}
}
