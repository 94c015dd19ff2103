package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	mobyclient "github.com/moby/moby/client"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	healthgrpc "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	agentv1 "github.com/clawker/clawker/api/agent/v1"
	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/egress"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/controlplane/token"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/rpcbuf"
)

// The CP's listeners, each started by Run's numbered sequence: the token
// endpoint and AgentService (agent surface), AdminService, and /healthz
// with /metrics. Each failure degrades its own subsystem on /healthz.

// tokenSigningKeyFile, in the data dir, keeps the access-token signing key
// across CP restarts (see token.LoadOrCreateSigningKey).
const tokenSigningKeyFile = "token-signing.key"

// Token endpoint HTTP timeouts. An exchange is one small POST answered
// from memory and one sqlite write, so these are generous upper bounds
// that only ever cut off stalled or idle clients.
const (
	tokenReadHeaderTimeout = 10 * time.Second
	tokenReadTimeout       = 30 * time.Second
	tokenWriteTimeout      = 30 * time.Second
	tokenIdleTimeout       = 60 * time.Second
)

// serveAgentSurface starts the token endpoint and the AgentService
// listener: mTLS → AuthInterceptor → IdentityInterceptor → Handler.
//
// closers receives the jti store's close: Run runs closers only after
// every server has been shut down, so no token request can still be using
// the store.
func (d *Daemon) serveAgentSurface(k *keys, peers agent.ContainerByPeerIP, registry agent.Registry, closers *[]func()) (*http.Server, *grpc.Server) {
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
	signKey, replaced, err := token.LoadOrCreateSigningKey(filepath.Join(d.cfg.DataDir, tokenSigningKeyFile))
	if err != nil {
		jti.Close()
		fail(subToken, "cp_token_unavailable", err)
		d.health.set(subAgentAPI, "disabled: no token issuer")
		return nil, nil
	}
	if replaced {
		log.Warn().Str("event", "token_signing_key_replaced").Msg("token signing key was unreadable; a new one was written (tokens issued before are void)")
	}
	issuer, err := token.NewIssuer(token.Config{AssertionKeyFile: k.assertPath, JTI: jti, PeerLookup: peers,
		Registrations: registryRows{registry}, SigningKey: signKey, Log: log.With("subsystem", "token")})
	if err != nil {
		jti.Close()
		fail(subToken, "cp_token_unavailable", err)
		d.health.set(subAgentAPI, "disabled: no token issuer")
		return nil, nil
	}
	d.dos.issuer.Store(issuer)
	var httpSrv *http.Server
	if ln, err := d.bind("token", d.cfg.TokenAddr); err != nil {
		jti.Close()
		fail(subToken, "cp_token_unavailable", err)
	} else {
		httpSrv = &http.Server{Handler: issuer.Handler(), TLSConfig: tlsCfg.Clone(),
			// A token exchange is one small request and response: bound
			// every phase so a slow or idle client cannot pin a conn.
			ReadHeaderTimeout: tokenReadHeaderTimeout, ReadTimeout: tokenReadTimeout,
			WriteTimeout: tokenWriteTimeout, IdleTimeout: tokenIdleTimeout, MaxHeaderBytes: maxHeaderBytes,
			// TLS handshake refusals (wrong cert, no cert) land here: keep
			// them structured rather than on the std logger.
			ErrorLog: newHTTPErrorLog(log.With("subsystem", "token"))}
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
	}, append(opts, agentServerLimits()...)...)...)
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
func (d *Daemon) serveAdmin(k *keys, registry agent.Registry, bus *overseer.Overseer, docker mobyclient.APIClient, contain admin.Containment, eg *egress.Service) *grpc.Server {
	log := d.log
	deps := admin.Deps{Registry: registry, Bus: bus, Health: d.health.report, Version: d.version,
		Log: log.With("subsystem", "admin"), Exec: d.execer()}
	if docker != nil {
		deps.Docker = docker
	}
	if contain != nil {
		deps.Contain = contain
	}
	if eg != nil {
		deps.Egress = eg
	}
	srv, err := admin.New(deps)
	if err != nil {
		log.Error().Str("event", "admin_unavailable").Err(err).Msg("admin API not started")
		d.health.set(subAdmin, "failed: "+err.Error())
		return nil
	}
	if eg != nil {
		eg.SetTrust(srv.Trusted) // egress attribution uses the exec gate's trust rule
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
	gs := grpc.NewServer(append([]grpc.ServerOption{grpc.Creds(rpcbuf.BatchWrites(credentials.NewTLS(admin.ServerTLSConfig(k.cert, k.caPool)))),
		grpc.ChainUnaryInterceptor(recoverUnary(log), u), grpc.ChainStreamInterceptor(recoverStream(log), s),
		grpc.ForceServerCodecV2(rpcbuf.NewCodec()), grpc.WriteBufferSize(adminWriteBuffer),
		experimental.BufferPool(rpcbuf.TransportPool())}, adminServerLimits()...)...)
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
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: healthReadTimeout,
		WriteTimeout: healthWriteTimeout, IdleTimeout: healthIdleTimeout, MaxHeaderBytes: maxHeaderBytes}
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
	ln = d.limitListener(name, ln)
	d.log.Info().Str("event", "cp_listening").Str("listener", name).Str("addr", ln.Addr().String()).Msg("listening")
	return ln, nil
}

// registryRows tells the token issuer whether a container has a registry
// row: an unknown agent is not registered; any other answer, an error
// included, is, so the issuer never repeats an exchange on doubt.
type registryRows struct{ r agent.Registry }

func (r registryRows) Registered(_ context.Context, containerID string) (bool, error) {
	_, err := r.r.LookupByContainerID(containerID)
	if errors.Is(err, agent.ErrUnknownAgent) {
		return false, nil
	}
	return true, err
}
