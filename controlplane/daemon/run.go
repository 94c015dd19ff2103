package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	mobyclient "github.com/moby/moby/client"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthgrpc "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	agentv1 "github.com/clawker/clawker/api/agent/v1"
	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/controlplane/token"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
	"github.com/clawker/clawker/internal/rpcbuf"
)

// Subsystem names on /healthz.
const (
	subRegistry = "registry"
	subKeys     = "keys"
	subDocker   = "docker"
	subEvents   = "docker_events"
	subToken    = "token_endpoint"
	subAgentAPI = "agent_api"
	subDialer   = "dialer"
	subAdmin    = "admin_api"
)

// Daemon is one running clawker-cp. Build it with New, then Run.
type Daemon struct {
	cfg     Config
	log     *logger.Logger
	version string
	health  *health

	// newDocker builds the Docker client (a seam for tests).
	newDocker func() (mobyclient.APIClient, error)
	// listen opens listeners (a seam for tests: ":0" ports).
	listen func(network, addr string) (net.Listener, error)

	mu     sync.Mutex
	addrs  map[string]string // subsystem → bound address, for tests and logs
	dialer *agent.Dialer
}

// Option configures a Daemon.
type Option func(*Daemon)

// WithDocker replaces the Docker client constructor.
func WithDocker(fn func() (mobyclient.APIClient, error)) Option {
	return func(d *Daemon) { d.newDocker = fn }
}

// New returns a Daemon for cfg.
func New(cfg Config, version string, log *logger.Logger, opts ...Option) *Daemon {
	d := &Daemon{
		cfg: cfg, log: logger.OrNop(log), version: version,
		health: newHealth(version, subRegistry, subKeys, subDocker, subToken, subAgentAPI, subDialer, subAdmin),
		newDocker: func() (mobyclient.APIClient, error) {
			return mobyclient.New(mobyclient.FromEnv)
		},
		listen: net.Listen,
		addrs:  map[string]string{},
	}
	for _, o := range opts {
		o(d)
	}
	return d
}

// Addr returns the bound address of a listener ("admin", "agent", "token",
// "health") once Run has opened it.
func (d *Daemon) Addr(name string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.addrs[name]
}

// Health returns readiness and per-subsystem status.
func (d *Daemon) Health() (bool, map[string]string) { return d.health.report() }

// Token endpoint HTTP timeouts. An exchange is one small POST answered
// from memory and one sqlite write, so these are generous upper bounds
// that only ever cut off stalled or idle clients.
const (
	tokenReadHeaderTimeout = 10 * time.Second
	tokenReadTimeout       = 30 * time.Second
	tokenWriteTimeout      = 30 * time.Second
	tokenIdleTimeout       = 60 * time.Second
)

// keys is the CP's key material loaded from ConfigDir.
type keys struct {
	cert       tls.Certificate
	caPool     *x509.CertPool
	certPath   string
	keyPath    string
	assertPath string
}

func (d *Daemon) loadKeys() (*keys, error) {
	k := &keys{
		certPath:   d.cfg.path(consts.CPCertFile),
		keyPath:    d.cfg.path(consts.CPKeyFile),
		assertPath: d.cfg.path(consts.SigningPubFile),
	}
	var err error
	if k.cert, err = tls.LoadX509KeyPair(k.certPath, k.keyPath); err != nil {
		return nil, fmt.Errorf("load CP cert: %w", err)
	}
	if k.caPool, err = auth.ReadCertPool(d.cfg.path(consts.CACertFile)); err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if _, err := os.Stat(k.assertPath); err != nil {
		return nil, fmt.Errorf("assertion public key: %w", err)
	}
	return k, nil
}

// Run starts every subsystem in order and serves until ctx is cancelled,
// then shuts down gracefully. It returns an error only for what makes the
// process pointless (the health listener cannot bind, the metrics
// collectors cannot be built); every other
// failure degrades one subsystem and is reported on /healthz.
func (d *Daemon) Run(ctx context.Context) error {
	log := d.log
	log.Info().Str("event", "cp_starting").Str("version", d.version).Str("config_dir", d.cfg.ConfigDir).
		Str("data_dir", d.cfg.DataDir).Msg("clawker-cp starting")

	// Background work runs under runCtx; cancelling it stops the feeder,
	// the dialer's Sessions and the bus subscribers.
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()

	// Health first: /healthz must answer (503) while the rest starts.
	bus := overseer.New(log.With("subsystem", "bus"))
	var feeder *dockerevents.Feeder
	m, err := newMetrics(bus, func() float64 {
		if feeder == nil {
			return 0
		}
		return float64(feeder.Health().Reconnects)
	})
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	closers = append(closers, bus.Subscribe("metrics", nil, m.observe))
	healthSrv, err := d.serveHealth(m)
	if err != nil {
		return err
	}
	closers = append(closers, func() { shutdownHTTP(healthSrv, d.cfg.ShutdownTimeout) })

	// 1. data dir and schema.
	registry := d.openRegistry(&closers)

	// 2. keys.
	k, err := d.loadKeys()
	if err != nil {
		log.Error().Str("event", "cp_keys_unavailable").Err(err).Msg("key material missing: token, agent and admin listeners stay down")
		d.health.set(subKeys, "failed: "+err.Error())
	} else {
		d.health.set(subKeys, statusOK)
	}

	// 3. Docker client and peer lookup.
	var docker mobyclient.APIClient
	var peers *agent.MobyPeerLookup
	if docker, err = d.newDocker(); err != nil {
		log.Error().Str("event", "cp_docker_unavailable").Err(err).Msg("no Docker client: agents cannot be watched, dialed or verified")
		d.health.set(subDocker, "failed: "+err.Error())
		docker = nil
	} else {
		closers = append(closers, func() { docker.Close() })
		d.health.set(subDocker, statusOK)
		peers = agent.NewMobyPeerLookup(docker, log.With("subsystem", "peerlookup"))
	}

	var grpcServers []*grpc.Server
	var httpServers []*http.Server
	defer func() {
		d.stopAll(grpcServers, httpServers, d.cfg.ShutdownTimeout)
	}()

	// 4. token endpoint and 5. agent listener.
	if k != nil && peers != nil {
		if srv, gs := d.serveAgentSurface(k, peers, registry, &closers); srv != nil {
			httpServers = append(httpServers, srv)
			grpcServers = append(grpcServers, gs)
		}
	} else {
		reason := "disabled: needs keys and Docker"
		d.health.set(subToken, reason)
		d.health.set(subAgentAPI, reason)
		log.Warn().Str("event", "cp_agent_surface_disabled").Msg("token endpoint and AgentService not started")
	}

	// 6. Docker events watcher.
	if docker != nil {
		var evOpts []dockerevents.Option
		evOpts = append(evOpts, dockerevents.AgentLabel())
		if peers != nil {
			// Events missed while the stream was down may have moved IPs:
			// rebuild the peer index after every reconnect.
			evOpts = append(evOpts, dockerevents.WithReconnectHook(func(ctx context.Context) {
				if err := peers.Refresh(ctx); err != nil {
					log.Warn().Str("event", "peer_lookup_refresh_failed").Err(err).
						Msg("peer index refresh after events reconnect failed; lookups resync on miss")
				}
			}))
		}
		feeder, err = dockerevents.New(docker, bus, log.With("subsystem", "dockerevents"), evOpts...)
		if err != nil {
			log.Error().Str("event", "cp_docker_events_unavailable").Err(err).Msg("docker events feeder not started")
			d.health.set(subEvents, "failed: "+err.Error())
		} else {
			f := feeder
			d.health.probe(subEvents, func() string {
				h := f.Health()
				if h.Connected {
					return statusOK
				}
				if h.LastError != "" {
					return "disconnected: " + h.LastError
				}
				return "connecting"
			})
			go d.guard("dockerevents", func() {
				if err := f.Run(runCtx); err != nil && runCtx.Err() == nil {
					log.Error().Str("event", "cp_docker_events_stopped").Err(err).Msg("docker events feeder stopped")
				}
			})
		}
	} else {
		d.health.set(subEvents, "disabled: no Docker client")
	}

	// 7. dialer + init executor + agent.Start (which also keeps the peer
	// index current). Without them the index is still fed, for the token
	// endpoint and the identity gate.
	agentsUp := false
	if k != nil && docker != nil {
		agentsUp = d.startAgents(runCtx, k, docker, peers, bus, registry, &closers)
	} else {
		d.health.set(subDialer, "disabled: needs keys and Docker")
	}
	if !agentsUp && peers != nil {
		closers = append(closers, bus.Subscribe("peer-index", func(e overseer.Event) bool {
			_, ok := e.(dockerevents.DockerEvent)
			return ok
		}, func(e overseer.Event) {
			ev := e.(dockerevents.DockerEvent)
			peers.Observe(runCtx, ev.ContainerID, ev.Action)
		}))
	}

	// Unused clawkerd volumes: pruned at start and after each agent destroy.
	if docker != nil {
		vols := newClawkerdVolumes(runCtx, docker, log.With("subsystem", "volumes"))
		closers = append(closers, bus.Subscribe("clawkerd-volumes", isAgentDestroy, vols.handle))
		go d.guard("clawkerd_volumes", vols.run)
	}

	// Containment policy for untrusted agents (optional).
	if d.cfg.UntrustedPolicy != "" && d.cfg.UntrustedPolicy != PolicyOff {
		pol := &untrustedPolicy{action: d.cfg.UntrustedPolicy, bus: bus, log: log.With("subsystem", "policy"), ctx: runCtx, now: time.Now}
		if docker != nil {
			pol.docker = docker
		}
		closers = append(closers, bus.Subscribe("untrusted-policy", isUntrusted, pol.handle))
		log.Info().Str("event", "untrusted_policy_enabled").Str("action", pol.action).Msg("containment policy active")
	}

	// 8. admin listener.
	if k != nil {
		if gs := d.serveAdmin(k, registry, bus, docker); gs != nil {
			grpcServers = append(grpcServers, gs)
		}
	} else {
		d.health.set(subAdmin, "disabled: needs keys")
	}

	d.health.markStarted()
	ready, subs := d.health.report()
	switch {
	case ready:
		log.Info().Str("event", "cp_ready").Msg("clawker-cp ready")
	case onlyConnecting(subs):
		// The events stream typically connects a moment later; /healthz
		// turns 200 then. Not a degradation.
		log.Info().Str("event", "cp_started").Str("waiting_for", degraded(subs)).Msg("clawker-cp started")
	default:
		log.Warn().Str("event", "cp_degraded").Str("subsystems", degraded(subs)).Msg("clawker-cp serving degraded")
	}

	<-ctx.Done()
	log.Info().Str("event", "cp_stopping").Msg("shutting down")
	// Stop accepting work first, then cancel Sessions: the dialer treats
	// ctx cancellation as intentional teardown and publishes no breakage.
	d.stopAll(grpcServers, httpServers, d.cfg.ShutdownTimeout)
	grpcServers, httpServers = nil, nil
	cancelRun()
	log.Info().Str("event", "cp_stopped").Msg("clawker-cp stopped")
	return nil
}

// openRegistry opens the sqlite registry, degrading to an in-memory one
// (logged, reported) so the CP still serves when the data dir is broken.
func (d *Daemon) openRegistry(closers *[]func()) agent.Registry {
	log := d.log
	dbPath := filepath.Join(d.cfg.DataDir, "registry.db")
	err := os.MkdirAll(d.cfg.DataDir, 0o700)
	if err == nil {
		err = agent.EnsureSchema(dbPath, log)
	}
	var reg *agent.SQLiteRegistry
	if err == nil {
		reg, err = agent.NewSQLiteWriter(dbPath, log.With("subsystem", "registry"))
	}
	if err != nil {
		log.Error().Str("event", "cp_registry_degraded").Err(err).Str("path", dbPath).
			Msg("sqlite registry unavailable; using an in-memory registry (rows will not survive a restart)")
		d.health.set(subRegistry, "degraded: in-memory ("+err.Error()+")")
		return agent.NewRegistry(log.With("subsystem", "registry"))
	}
	*closers = append(*closers, func() { reg.Close() })
	d.health.set(subRegistry, statusOK)
	return reg
}

// serveAgentSurface starts the token endpoint and the AgentService
// listener: mTLS → AuthInterceptor → IdentityInterceptor → Handler.
//
// closers receives the jti store's close: Run runs closers only after
// every server has been shut down, so no token request can still be using
// the store.
func (d *Daemon) serveAgentSurface(k *keys, peers *agent.MobyPeerLookup, registry agent.Registry, closers *[]func()) (*http.Server, *grpc.Server) {
	log := d.log
	fail := func(sub, ev string, err error) {
		log.Error().Str("event", ev).Err(err).Msg(sub + " not started")
		d.health.set(sub, "failed: "+err.Error())
	}
	tlsCfg, err := token.ServerTLSConfig(k.cert, k.caPool)
	if err != nil {
		fail(subToken, "cp_token_unavailable", err)
		d.health.set(subAgentAPI, "disabled: no TLS")
		return nil, nil
	}
	jti, err := token.NewSQLiteJTIStore(filepath.Join(d.cfg.DataDir, "tokens.db"), nil)
	if err != nil {
		fail(subToken, "cp_token_unavailable", err)
		d.health.set(subAgentAPI, "disabled: no token issuer")
		return nil, nil
	}
	issuer, err := token.NewIssuer(token.Config{AssertionKeyFile: k.assertPath, JTI: jti, PeerLookup: peers,
		Log: log.With("subsystem", "token")})
	if err != nil {
		jti.Close()
		fail(subToken, "cp_token_unavailable", err)
		d.health.set(subAgentAPI, "disabled: no token issuer")
		return nil, nil
	}
	var httpSrv *http.Server
	if ln, err := d.bind("token", d.cfg.TokenAddr); err != nil {
		jti.Close()
		fail(subToken, "cp_token_unavailable", err)
	} else {
		httpSrv = &http.Server{Handler: issuer.Handler(), TLSConfig: tlsCfg.Clone(),
			// A token exchange is one small request and response: bound
			// every phase so a slow or idle client cannot pin a conn.
			ReadHeaderTimeout: tokenReadHeaderTimeout, ReadTimeout: tokenReadTimeout,
			WriteTimeout: tokenWriteTimeout, IdleTimeout: tokenIdleTimeout,
			// TLS handshake refusals (wrong cert, no cert) land here: keep
			// them structured rather than on the std logger.
			ErrorLog: stdlog.New(httpErrorLog{log: log.With("subsystem", "token")}, "", 0)}
		go d.guard("token", func() {
			err := httpSrv.ServeTLS(ln, "", "")
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error().Str("event", "cp_token_stopped").Err(err).Msg("token endpoint stopped")
				d.health.set(subToken, "failed: "+err.Error())
			}
		})
		// The jti store closes once the server has fully shut down (not in
		// RegisterOnShutdown, which runs while handlers may still use it).
		// closers run after Run has stopped every server (see Run's defers).
		*closers = append(*closers, func() {
			if err := jti.Close(); err != nil {
				log.Warn().Str("event", "cp_token_jti_close_failed").Err(err).Msg("closing jti store failed")
			}
		})
		d.health.set(subToken, statusOK)
	}

	authU, authS, err := token.AuthInterceptor(issuer.Verifier(), map[string]string{consts.RegisterMethod: consts.ScopeRegister}, log.With("subsystem", "auth"))
	if err != nil {
		fail(subAgentAPI, "agent_auth_unavailable", err)
		return httpSrv, nil
	}
	opts, err := agent.AgentServerOptions(tlsCfg, authU, authS, peers, log.With("subsystem", "identity"))
	if err != nil {
		fail(subAgentAPI, "agent_identity_unavailable", err)
		return httpSrv, nil
	}
	h, err := agent.NewHandler(registry, log.With("subsystem", "register"), nil)
	if err != nil {
		fail(subAgentAPI, "agent_handler_unavailable", err)
		return httpSrv, nil
	}
	ln, err := d.bind("agent", d.cfg.AgentAddr)
	if err != nil {
		fail(subAgentAPI, "agent_listener_unavailable", err)
		return httpSrv, nil
	}
	// recover wraps the whole chain: mTLS → auth → identity → handler.
	gs := grpc.NewServer(append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(recoverUnary(log)), grpc.ChainStreamInterceptor(recoverStream(log)),
	}, opts...)...)
	agentv1.RegisterAgentServiceServer(gs, h)
	go d.guard("agent_api", func() {
		if err := gs.Serve(ln); err != nil {
			log.Error().Str("event", "agent_listener_stopped").Err(err).Msg("AgentService stopped")
			d.health.set(subAgentAPI, "failed: "+err.Error())
		}
	})
	d.health.set(subAgentAPI, statusOK)
	return httpSrv, gs
}

// adminWriteBuffer is how much the admin transport gathers before a
// write (exec output in few large syscalls).
const adminWriteBuffer = 256 << 10

// serveAdmin starts AdminService (CN pinned to clawker-cli) with gRPC
// health and reflection.
func (d *Daemon) serveAdmin(k *keys, registry agent.Registry, bus *overseer.Overseer, docker mobyclient.APIClient) *grpc.Server {
	log := d.log
	deps := admin.Deps{Registry: registry, Bus: bus, Health: d.health.report, Version: d.version,
		Log: log.With("subsystem", "admin"), Exec: d.execer()}
	if docker != nil {
		deps.Docker = docker
	}
	srv, err := admin.New(deps)
	if err != nil {
		log.Error().Str("event", "admin_unavailable").Err(err).Msg("admin API not started")
		d.health.set(subAdmin, "failed: "+err.Error())
		return nil
	}
	ln, err := d.bind("admin", d.cfg.AdminAddr)
	if err != nil {
		log.Error().Str("event", "admin_unavailable").Err(err).Msg("admin API not started")
		d.health.set(subAdmin, "failed: "+err.Error())
		return nil
	}
	u, s := admin.Interceptors(log.With("subsystem", "admin"))
	// Exec streams bulk output to the CLI: encode it without gRPC's zeroed
	// 1 MiB buffer per message, and write it in large flushes of one
	// syscall each rather than one per TLS record (see rpcbuf).
	gs := grpc.NewServer(grpc.Creds(rpcbuf.BatchWrites(credentials.NewTLS(admin.ServerTLSConfig(k.cert, k.caPool)))),
		grpc.ChainUnaryInterceptor(recoverUnary(log), u), grpc.ChainStreamInterceptor(recoverStream(log), s),
		grpc.ForceServerCodecV2(rpcbuf.NewCodec()), grpc.WriteBufferSize(adminWriteBuffer))
	adminv1.RegisterAdminServiceServer(gs, srv)
	hs := healthgrpc.NewServer()
	hs.SetServingStatus(adminv1.AdminService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	go d.guard("admin_api", func() {
		if err := gs.Serve(ln); err != nil {
			log.Error().Str("event", "admin_listener_stopped").Err(err).Msg("admin API stopped")
			d.health.set(subAdmin, "failed: "+err.Error())
		}
	})
	d.health.set(subAdmin, statusOK)
	return gs
}

// serveHealth starts /healthz and /metrics (plain HTTP). Its failure is the
// one fatal startup error: a CP nobody can observe is worse than none.
func (d *Daemon) serveHealth(m *metrics) (*http.Server, error) {
	ln, err := d.bind("health", d.cfg.HealthAddr)
	if err != nil {
		d.log.Error().Str("event", "cp_health_unavailable").Err(err).Msg("cannot bind health listener")
		return nil, fmt.Errorf("health listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/healthz", d.health)
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go d.guard("health", func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error().Str("event", "cp_health_stopped").Err(err).Msg("health listener stopped")
		}
	})
	return srv, nil
}

func (d *Daemon) bind(name, addr string) (net.Listener, error) {
	ln, err := d.listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s on %s: %w", name, addr, err)
	}
	d.mu.Lock()
	d.addrs[name] = ln.Addr().String()
	d.mu.Unlock()
	d.log.Info().Str("event", "cp_listening").Str("listener", name).Str("addr", ln.Addr().String()).Msg("listening")
	return ln, nil
}

// guard runs fn, recovering and logging a panic so no goroutine can take
// the daemon down.
func (d *Daemon) guard(name string, fn func()) {
	defer func() {
		if r := recover(); r != nil {
			d.log.Error().Str("event", "cp_goroutine_panic").Str("goroutine", name).Interface("panic", r).Msg("recovered")
		}
	}()
	fn()
}

// stopAll stops every server, gracefully up to timeout. Each stop runs
// under guard, so a panic in one is logged and cannot stall or crash the
// shutdown of the others.
func (d *Daemon) stopAll(gs []*grpc.Server, hs []*http.Server, timeout time.Duration) {
	var wg sync.WaitGroup
	for _, s := range gs {
		wg.Add(1)
		go d.guard("stop_grpc", func() {
			defer wg.Done()
			done := make(chan struct{})
			go d.guard("stop_grpc_graceful", func() { defer close(done); s.GracefulStop() })
			select {
			case <-done:
			case <-time.After(timeout):
				d.log.Warn().Str("event", "cp_grpc_stop_forced").Dur("timeout", timeout).Msg("graceful stop timed out; stopping hard")
				s.Stop()
			}
		})
	}
	for _, s := range hs {
		wg.Add(1)
		go d.guard("stop_http", func() { defer wg.Done(); shutdownHTTP(s, timeout) })
	}
	wg.Wait()
}

func shutdownHTTP(s *http.Server, timeout time.Duration) {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		s.Close()
	}
}

// httpErrorLog adapts net/http's error logger to zerolog.
type httpErrorLog struct{ log *logger.Logger }

func (h httpErrorLog) Write(p []byte) (int, error) {
	h.log.Warn().Str("event", "token_http_error").Str("error", strings.TrimSpace(string(p))).Msg("token endpoint connection error")
	return len(p), nil
}
