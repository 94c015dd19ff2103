package clawkerd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	agentv1 "github.com/clawker/clawker/api/agent/v1"
	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

const (
	// JWTBearerAssertionType is the RFC 7523 client_assertion_type.
	JWTBearerAssertionType = consts.JWTBearerAssertionType
	// RegisterClientID is the client_id clawkerd sends at the token endpoint.
	RegisterClientID = "clawkerd"

	registerTimeout = 30 * time.Second
)

// registrar performs the one-time Register. It is serialised: concurrent
// RegisterRequired wait for the one in flight. The single-use assertion is
// exchanged at most once per successful exchange: the access token is kept
// and reused until it expires, so a failed Register call is retried with
// the same token instead of spending the assertion again. After success
// every later request answers ok without network traffic.
type registrar struct {
	cfg *Config
	log *logger.Logger

	// dial opens the TLS conns to the CP (a test seam).
	dial dialTLSFunc

	mu        sync.Mutex
	done      bool
	token     *oauth2.Token
	exchanges int        // for tests: token exchanges performed
	warm      *warmConns // pre-dialed conns awaiting RegisterRequired
}

func newRegistrar(cfg *Config, log *logger.Logger) *registrar {
	return &registrar{cfg: cfg, log: log, dial: dialTLS}
}

// agentConn creates the AgentService ClientConn (not yet connected).
func (r *registrar) agentConn(tlsCfg *tls.Config) (*grpc.ClientConn, error) {
	return grpc.NewClient(r.cfg.CPAgentAddr,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 10 * time.Second}),
	)
}

func (r *registrar) register(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		r.log.Info().Str("event", "register_repeat").Msg("already registered")
		return nil
	}
	if r.cfg.CPAgentAddr == "" || r.cfg.CPTokenURL == "" {
		return fmt.Errorf("register: %s and %s must be set", consts.EnvCPAgentAddr, consts.EnvCPTokenURL)
	}
	// Detached from the Session: once the assertion is on the wire the
	// exchange must complete so its token is kept, even if the Session
	// that asked drops meanwhile.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), registerTimeout)
	defer cancel()
	tlsCfg := ClientTLSConfig(r.cfg.Cert, r.cfg.CAPool)
	w := r.claimWarm()
	var conn *grpc.ClientConn // the AgentService conn; nil: dial one
	if w != nil {
		conn, w.agent = w.agent, nil
		if conn != nil && conn.GetState() == connectivity.TransientFailure {
			// Its reconnect backoff would delay Register: start afresh.
			r.log.Warn().Str("event", "register_prewarm_failed").Str("target", "agent_service").Msg("pre-dialed agent service conn failed; dialing")
			_ = conn.Close()
			conn = nil
		}
		// Off the reply path: it may wait for a pre-dial still in flight.
		defer func() { go w.release() }()
	}

	if r.token == nil || !r.token.Valid() {
		assertion, err := r.cfg.readAssertion()
		if errors.Is(err, fs.ErrNotExist) {
			// Spent by an earlier exchange whose Register then failed CP-side:
			// say so with the stable marker, not as an identity failure.
			return fmt.Errorf("%s the one-time assertion was exchanged and removed; recreate the agent: %w",
				clawkerdv1.RegisterAssertionSpent, err)
		}
		if err != nil {
			return err
		}
		tok, err := r.exchange(ctx, tlsCfg, w, assertion)
		if err != nil {
			return fmt.Errorf("token exchange: %w", err)
		}
		if tok.AccessToken == "" {
			return errors.New("token exchange: empty access token")
		}
		r.token = tok
		r.log.Info().Str("event", "token_exchanged").Time("expiry", tok.Expiry).Msg("assertion exchanged for access token")
		r.discardAssertion()
	}

	if conn == nil {
		var err error
		if conn, err = r.agentConn(tlsCfg); err != nil {
			return fmt.Errorf("dial agent service: %w", err)
		}
	}
	defer func() { _ = conn.Close() }()
	md := metadata.Pairs("authorization", "Bearer "+r.token.AccessToken)
	if _, err := agentv1.NewAgentServiceClient(conn).Register(metadata.NewOutgoingContext(ctx, md),
		&agentv1.RegisterRequest{AgentName: r.cfg.AgentName, Project: r.cfg.Project}, grpc.WaitForReady(true)); err != nil {
		return fmt.Errorf("register call: %w", err)
	}
	r.done = true
	r.token = nil
	r.log.Info().Str("event", "registered").Str("agent", r.cfg.AgentName).Str("project", r.cfg.Project).Msg("registered with control plane")
	return nil
}

// exchange trades the assertion for an access token, over the pre-dialed
// token conn when there is one. That conn may have died with the CP it
// reached (a CP killed between the warm-up and RegisterRequired): a
// transport failure on it is retried once on a fresh dial. The retry is
// safe: an assertion the dead CP burned may be repeated by this same cert
// until the agent is registered.
func (r *registrar) exchange(ctx context.Context, tlsCfg *tls.Config, w *warmConns, assertion string) (*oauth2.Token, error) {
	tokenTLS := tokenTLSConfig(tlsCfg)
	cc := clientcredentials.Config{
		ClientID:  RegisterClientID,
		TokenURL:  r.cfg.CPTokenURL,
		Scopes:    []string{consts.ScopeRegister},
		AuthStyle: oauth2.AuthStyleInParams,
		EndpointParams: url.Values{
			"client_assertion_type": {JWTBearerAssertionType},
			"client_assertion":      {assertion},
		},
	}
	for attempt := 0; ; attempt++ {
		warm := false
		httpClient := &http.Client{
			Timeout: registerTimeout,
			Transport: &http.Transport{TLSClientConfig: tokenTLS,
				DialTLSContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
					c, err := w.takeToken(ctx, addr)
					if c != nil {
						warm = true
						return c, nil
					}
					if err != nil {
						r.log.Warn().Str("event", "register_prewarm_failed").Str("target", "token").Err(err).Msg("pre-dialed token conn unusable; dialing")
					}
					return r.dial(ctx, addr, tokenTLS)
				}},
		}
		r.exchanges++
		tok, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, httpClient))
		httpClient.CloseIdleConnections()
		var answered *oauth2.RetrieveError
		if err == nil || !warm || attempt > 0 || errors.As(err, &answered) || ctx.Err() != nil {
			return tok, err
		}
		r.log.Warn().Str("event", "register_prewarm_failed").Str("target", "token").Err(err).
			Msg("token exchange failed on the pre-dialed conn; retrying on a fresh one")
	}
}

// discardAssertion removes the spent assertion: once exchanged it is only
// material for a replay. A container restart never needs it (the agent is
// registered by then: the CP finds its row and sends no RegisterRequired),
// so a failure is logged, not fatal.
func (r *registrar) discardAssertion() {
	p := r.cfg.AssertionPath
	if p == "" {
		return
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.log.Warn().Str("event", "assertion_remove_failed").Err(err).Msg("spent assertion left on disk")
		return
	}
	r.log.Info().Str("event", "assertion_removed").Msg("spent assertion removed")
}
