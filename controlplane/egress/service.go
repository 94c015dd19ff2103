package egress

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/egress/egressca"
	"github.com/clawker/clawker/internal/egress/gateway"
	"github.com/clawker/clawker/internal/egress/policy"
	"github.com/clawker/clawker/internal/logger"
)

// Config is what the component needs from the daemon.
type Config struct {
	DNSAddr   string // agents' resolver, UDP and TCP (":53")
	ProxyAddr string // agents' HTTP(S) proxy (":3128")
	// UpstreamDNS ("ip:port") answers allowed names and resolves proxy
	// destinations; "" uses the first nameserver of /etc/resolv.conf.
	// Tests point it at their fake internet's zone.
	UpstreamDNS string
	// UpstreamCA is PEM of roots trusted for intercepted upstreams besides
	// the system's (tests: their fake internet's CA).
	UpstreamCA []byte
	PolicyDir  string // persisted project policies; "" keeps them in memory
	// StateDB is the sqlite file of blocks and timed grants, restored at
	// start; "" keeps them in memory (a restart lifts them).
	StateDB string
	// Containers, when set, prunes at start the blocks of containers
	// destroyed while the CP was down (Forget covers later destroys).
	Containers ContainerLister
	CACert     string // interception CA files; missing: interception fails closed
	CAKey      string
	Peers      PeerLookup
	Bus        Publisher
	Metrics    prometheus.Registerer // optional
	Log        *logger.Logger
}

// Service is the running gateway.
type Service struct {
	cfg    Config
	log    *logger.Logger
	peers  PeerLookup
	store  *store
	state  *stateDB
	grants *policy.GrantSet
	trust  atomic.Pointer[TrustFunc]

	mu       sync.Mutex
	blocked  map[string]bool
	grantSub map[uint64]overseer.Subject // who each grant is for, for its expiry audit

	dnsUDP, dnsTCP *dns.Server
	proxy          *http.Server
	addrs          map[string]string
}

// Start binds the DNS and proxy listeners and serves them. An error means
// the gateway is down, so agents have no egress (their networks have no
// other route out).
func Start(ctx context.Context, cfg Config) (_ *Service, err error) {
	log := logger.OrNop(cfg.Log)
	if cfg.Peers == nil || cfg.Bus == nil {
		return nil, errors.New("egress: peer lookup and bus are required")
	}
	st, err := newStore(cfg.PolicyDir, log)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: log, peers: cfg.Peers, store: st, grants: policy.NewGrantSet(nil),
		blocked: map[string]bool{}, grantSub: map[uint64]overseer.Subject{}, addrs: map[string]string{}}
	// Unreadable state fails the start: serving without the operator's
	// blocks would lift them (fail closed: no gateway, no egress).
	if s.state, err = openStateDB(ctx, cfg.StateDB); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.state.close()
		}
	}()
	if err := s.restore(ctx); err != nil {
		return nil, err
	}
	s.pruneGone(ctx)
	ca := s.loadCA()
	upstream, resolver, err := upstreams(cfg.UpstreamDNS)
	if err != nil {
		return nil, err
	}
	roots, err := upstreamRoots(cfg.UpstreamCA)
	if err != nil {
		return nil, err
	}
	gcfg := gateway.Config{Attributor: attributor{s}, Policies: st, Grants: s.grants, Resolver: resolver,
		Sink: busSink{cfg.Bus}, CA: ca, UpstreamRoots: roots, Log: log}
	if cfg.Metrics != nil {
		gcfg.Decisions = gateway.NewDecisionCounter()
		if err := cfg.Metrics.Register(gcfg.Decisions); err != nil {
			return nil, fmt.Errorf("egress metrics: %w", err)
		}
	}
	g, err := gateway.New(gcfg)
	if err != nil {
		return nil, err
	}
	if err := s.serve(g, upstream); err != nil {
		s.Close()
		return nil, err
	}
	go s.sweep(ctx)
	return s, nil
}

// upstreams builds the DNS upstream and the proxy's resolver over the
// same server, so both see the same answers.
func upstreams(addr string) (gateway.Upstream, gateway.Resolver, error) {
	if addr == "" {
		cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil || len(cc.Servers) == 0 {
			return nil, nil, fmt.Errorf("egress: no upstream resolver in /etc/resolv.conf: %v", err)
		}
		addr = net.JoinHostPort(cc.Servers[0], cc.Port)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, nil, fmt.Errorf("egress: upstream DNS %q: %w", addr, err)
	}
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	return gateway.ForwardUpstream{Addr: addr}, r, nil
}

// upstreamRoots is the system pool plus extra PEM roots; nil (the
// system pool) without extras.
func upstreamRoots(extra []byte) (*x509.CertPool, error) {
	if len(extra) == 0 {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(extra) {
		return nil, errors.New("egress: upstream CA has no PEM certificate")
	}
	return pool, nil
}

func (s *Service) loadCA() *egressca.CA {
	certPEM, err1 := os.ReadFile(s.cfg.CACert)
	keyPEM, err2 := os.ReadFile(s.cfg.CAKey)
	if err := errors.Join(err1, err2); err != nil {
		s.log.Warn().Str("event", "egress_ca_unavailable").Err(err).Msg("no interception CA: intercept rules deny")
		return nil
	}
	ca, err := egressca.LoadCA(certPEM, keyPEM)
	if err != nil {
		s.log.Warn().Str("event", "egress_ca_unavailable").Err(err).Msg("interception CA unreadable: intercept rules deny")
		return nil
	}
	return ca
}

func (s *Service) serve(g *gateway.Gateway, upstream gateway.Upstream) error {
	h := gateway.NewDNSHandler(g, upstream)
	pc, err := net.ListenPacket("udp", s.cfg.DNSAddr)
	if err != nil {
		return fmt.Errorf("egress dns udp %s: %w", s.cfg.DNSAddr, err)
	}
	s.dnsUDP = &dns.Server{PacketConn: pc, Handler: h}
	tl, err := net.Listen("tcp", s.cfg.DNSAddr)
	if err != nil {
		pc.Close()
		return fmt.Errorf("egress dns tcp %s: %w", s.cfg.DNSAddr, err)
	}
	s.dnsTCP = &dns.Server{Listener: tl, Handler: h}
	pl, err := net.Listen("tcp", s.cfg.ProxyAddr)
	if err != nil {
		pc.Close()
		tl.Close()
		return fmt.Errorf("egress proxy %s: %w", s.cfg.ProxyAddr, err)
	}
	s.addrs["dns"], s.addrs["proxy"] = pc.LocalAddr().String(), pl.Addr().String()
	// No write timeout: tunnels and downloads are long-lived; headers
	// are bounded so an idle peer cannot pin a connection before its
	// request is attributed.
	s.proxy = &http.Server{Handler: gateway.NewProxy(g), ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: 90 * time.Second, MaxHeaderBytes: 64 << 10}
	for name, fn := range map[string]func() error{
		"dns_udp": s.dnsUDP.ActivateAndServe, "dns_tcp": s.dnsTCP.ActivateAndServe,
		"proxy": func() error { return s.proxy.Serve(pl) },
	} {
		go s.guard(name, fn)
	}
	s.log.Info().Str("event", "egress_gateway_listening").Str("dns", s.addrs["dns"]).Str("proxy", s.addrs["proxy"]).Msg("egress gateway serving")
	return nil
}

func (s *Service) guard(name string, fn func() error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error().Str("event", "egress_gateway_panic").Str("server", name).Interface("panic", r).Msg("recovered")
		}
	}()
	if err := fn(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error().Str("event", "egress_gateway_stopped").Str("server", name).Err(err).Msg("egress server stopped: agents have no egress")
	}
}

// Addr is a bound listener address ("dns", "proxy").
func (s *Service) Addr(name string) string { return s.addrs[name] }

// Close stops the listeners and closes the state file.
func (s *Service) Close() {
	defer s.state.close()
	if s.proxy != nil {
		s.proxy.Close()
	}
	for _, d := range []*dns.Server{s.dnsUDP, s.dnsTCP} {
		if d != nil {
			_ = d.Shutdown()
		}
	}
}

// SetTrust installs the CP's trust view; until then every peer is denied.
func (s *Service) SetTrust(fn TrustFunc) { s.trust.Store(&fn) }

// sweep audits expired grants once a second.
func (s *Service) sweep(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, g := range s.grants.Sweep() {
				s.log.Info().Str("event", "egress_grant_expired").Uint64("grant", g.ID).Str("agent", g.Agent).
					Str("host", g.Host).Msg("timed egress grant expired")
				s.mu.Lock()
				sub := s.grantSub[g.ID]
				delete(s.grantSub, g.ID)
				s.mu.Unlock()
				if err := s.state.deleteGrant(ctx, g.ID); err != nil {
					// Harmless: an expired row is never restored.
					s.log.Warn().Str("event", "egress_state_error").Err(err).Msg("expired grant not deleted")
				}
				s.cfg.Bus.Publish(EgressGrantExpired{Subject: sub, GrantID: g.ID, Host: g.Host, Port: g.Port, At: time.Now()})
			}
		}
	}
}
