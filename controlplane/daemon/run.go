package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	mobyclient "github.com/moby/moby/client"
	"google.golang.org/grpc"

	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/controlplane/egress"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/kubeagent"
	"github.com/clawker/clawker/internal/logger"
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
	// newKube builds the Kubernetes client (nil: from Config).
	newKube func() (kubeagent.Clients, error)
	// listen opens listeners (a seam for tests: ":0" ports).
	listen func(network, addr string) (net.Listener, error)

	mu     sync.Mutex
	addrs  map[string]string // subsystem → bound address, for tests and logs
	dialer *agent.Dialer

	dos dosState // per-peer bounds and DoS counters (limits.go)
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
	if err := m.reg.Register(newDoSCollector(&d.dos)); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
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

	var grpcServers []*grpc.Server
	var httpServers []*http.Server
	defer func() {
		d.stopAll(grpcServers, httpServers, d.cfg.ShutdownTimeout)
	}()

	// 3–7. the runtime agents run on, and what hangs off it.
	var rt runtimeOut
	if d.cfg.Runtime == RuntimeKubernetes {
		rt = d.startKube(runCtx, k, bus, registry, m, &closers)
	} else {
		rt = d.startDocker(runCtx, k, bus, registry, &feeder, &closers)
	}
	grpcServers, httpServers = rt.grpc, rt.http
	docker, peers := rt.docker, rt.peers

	// 8. egress gateway and admin listener.
	var containers egress.ContainerLister
	if docker != nil {
		containers = docker
	}
	eg := d.startEgress(runCtx, peers, containers, bus, m, &closers)
	if k != nil {
		if gs := d.serveAdmin(k, registry, bus, docker, rt.contain, eg); gs != nil {
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
