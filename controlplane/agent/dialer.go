package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/logger"
)

// Dial retry budget. clawkerd's listener comes up ~10-35ms after the
// container's start event reaches the CP, so a cycle's first connect
// waits for the port with cheap TCP probes (probeBackoff: 0.5ms doubling
// to a 2ms cap, full jitter, for at most connectProbeWindow), which finds
// the listener ~1ms after it comes up without a TLS/gRPC attempt per
// refusal. Past the window, whole attempts retry on a 5ms base doubling to
// an 80ms cap, with full jitter. The total bounds a cycle for a container
// whose listener never comes up (wrong image, crash loop).
const (
	connectBaseBackoff  = 5 * time.Millisecond
	connectMaxBackoff   = 80 * time.Millisecond
	connectTotalTimeout = 30 * time.Second
	connectProbeBase    = 500 * time.Microsecond
	connectProbeMax     = 2 * time.Millisecond
	// connectProbeWindow covers clawkerd's start → listening p99 (~35ms
	// on a loaded 2-core host) with room to spare.
	connectProbeWindow = 60 * time.Millisecond
	// handshakeTimeout bounds TLS + Hello→HelloAck on one attempt.
	handshakeTimeout = 10 * time.Second
	// Client keepalive: a Session to a container whose network vanished
	// without a FIN (network detach, host suspend) is reported as
	// SessionBroken within seconds: keepaliveTimeout is also the socket's
	// TCP_USER_TIMEOUT, which ends the TCP keepalive probes armed by
	// setSessionKeepalive (see dialer_liveness.go). keepaliveTime is
	// gRPC's client floor; clawkerd's enforcement MinTime (1s) permits it.
	keepaliveTime    = 10 * time.Second
	keepaliveTimeout = 2 * time.Second
	// closeErrCeiling is how many consecutive conn.Close failures a dial
	// cycle tolerates before bailing with SessionFailed{fd-leak-ceiling}.
	closeErrCeiling = 5
)

// SessionFailed reasons.
const (
	FailConnectTimeout      = "connect_total_timeout"
	FailContainerNotRunning = "container_not_running"
	FailContainerGone       = "container_gone"
	FailFDLeakCeiling       = "fd-leak-ceiling"
)

var (
	// ErrContainerGone: the container no longer exists; stop retrying.
	ErrContainerGone = errors.New("agent container gone")
	// ErrContainerNotRunning: the container exists but is not running.
	ErrContainerNotRunning = errors.New("agent container not running")
	// ErrNoSession: no live, initialized Session for the container.
	ErrNoSession = errors.New("no live session for container (not connected or still initializing)")
)

// DialerOption configures a Dialer beyond the spec's New parameters.
type DialerOption func(*Dialer)

// WithProbeWindow overrides how long a cycle's first connect probes for
// the listener before falling back to whole attempts; 0 disables probing.
func WithProbeWindow(w time.Duration) DialerOption {
	return func(d *Dialer) {
		if w >= 0 {
			d.probeWindow = w
		}
	}
}

// WithRetry overrides the backoff base, cap and total budget.
func WithRetry(base, maxBackoff, total time.Duration) DialerOption {
	return func(d *Dialer) {
		if base > 0 && maxBackoff >= base && total > 0 {
			d.base, d.cap, d.total = base, maxBackoff, total
		}
	}
}

// Dialer owns the CP→clawkerd Sessions: one goroutine per container that
// dials, classifies, registers, runs the init plan and then serves the
// Session until the container stops or the CP shuts down.
type Dialer struct {
	log      *logger.Logger
	docker   DockerInspector
	bus      *overseer.Overseer
	agents   Registry
	cert     tls.Certificate
	caPool   *x509.CertPool
	initExec *Executor
	resolve  Resolver
	creds    CredAnswerer // WithCredentials; nil: no credential forwarding

	base, cap, total time.Duration
	probeWindow      time.Duration
	// dialTCP dials one probe; a seam for tests.
	dialTCP func(ctx context.Context, address string) (net.Conn, error)
	// closeConn closes an attempt's conn; a seam for the FD-leak test.
	closeConn func(*grpc.ClientConn) error
	// wrapStream, when set, wraps each established Session's stream
	// (with the cancel that tears it down); a seam for crash tests.
	wrapStream func(containerID string, s clawkerdv1.ClawkerdService_SessionClient, cancel context.CancelFunc) clawkerdv1.ClawkerdService_SessionClient
	now        func() time.Time
	// registerTimeout: 0 means registerReplyTimeout (see registerWait).
	registerTimeout time.Duration
	// registerPause: 0 means 1s (see registerBackoff).
	registerPause time.Duration

	mu      sync.Mutex
	dialing map[string]*dialEntry
	// closeErrs: consecutive conn.Close failures per container, across
	// dial cycles (see dialer_fdleak.go).
	closeErrs map[string]int
	wg        sync.WaitGroup
}

// dialEntry is one live dial goroutine: the dedup key, its cancel, and
// its Session once initialized (for Exec).
type dialEntry struct {
	cancel  context.CancelFunc
	done    chan struct{}
	sess    *session
	observe bool // the Session failed the cert pin: Exec refuses
	// established: a Session is up on address (from SessionConnected,
	// before Register and the init plan set sess); a path change that
	// leaves address intact must not cut it.
	established bool
	address     string
	since       time.Time
}

// New constructs a Dialer, loading the CP client cert now so a bad path
// fails CP startup rather than the first dial. docker may be nil only
// when WithResolver is given. initExec may be nil: the dialer then logs
// agent_init_executor_unset per dial and skips the plan.
func New(log *logger.Logger, docker DockerInspector, bus *overseer.Overseer, agents Registry,
	certPath, keyPath string, caPool *x509.CertPool, initExec *Executor, opts ...DialerOption) (*Dialer, error) {
	if bus == nil {
		return nil, errors.New("agent: New dialer: nil bus")
	}
	if agents == nil {
		return nil, errors.New("agent: New dialer: nil registry")
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("agent: load CP client cert: %w", err)
	}
	d := &Dialer{
		log: logger.OrNop(log), docker: docker, bus: bus, agents: agents, cert: cert,
		caPool: caPool, initExec: initExec,
		base: connectBaseBackoff, cap: connectMaxBackoff, total: connectTotalTimeout,
		probeWindow: connectProbeWindow,
		dialTCP: func(ctx context.Context, address string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, "tcp", address)
		},
		closeConn: func(c *grpc.ClientConn) error { return c.Close() },
		now:       time.Now,
		dialing:   map[string]*dialEntry{},
	}
	for _, o := range opts {
		o(d)
	}
	if d.resolve == nil {
		if docker == nil {
			return nil, errors.New("agent: New dialer: nil docker client")
		}
		d.resolve = d.inspectTarget
	}
	return d, nil
}

// DialAgent starts (fire-and-forget) the Session goroutine for
// containerID unless one is already live. ctx bounds the Session's whole
// life: cancel it at CP shutdown.
func (d *Dialer) DialAgent(ctx context.Context, containerID string) {
	if containerID == "" {
		return
	}
	d.mu.Lock()
	if _, ok := d.dialing[containerID]; ok {
		d.mu.Unlock()
		d.log.Debug().Str("event", "agent_dial_dedup").Str("container_id", containerID).Msg("dial already in flight")
		return
	}
	dctx, cancel := context.WithCancel(ctx)
	e := &dialEntry{cancel: cancel, done: make(chan struct{}), since: d.now()}
	d.dialing[containerID] = e
	d.wg.Add(1)
	d.mu.Unlock()

	go func() {
		defer d.wg.Done()
		defer close(e.done)
		defer func() {
			d.mu.Lock()
			if d.dialing[containerID] == e {
				delete(d.dialing, containerID)
			}
			d.mu.Unlock()
			cancel()
		}()
		defer func() {
			if r := recover(); r != nil {
				d.log.Error().Str("event", "agent_dial_panic").Str("container_id", containerID).
					Str("panic", fmt.Sprint(r)).Msg("dial goroutine panicked; recovered")
			}
		}()
		d.runDial(dctx, containerID, e)
	}()
}

// CancelDial synchronously tears down the dial or Session for
// containerID; a no-op when there is none. Must not be called from the
// dial goroutine itself.
func (d *Dialer) CancelDial(containerID string) {
	d.mu.Lock()
	e, ok := d.dialing[containerID]
	d.mu.Unlock()
	if !ok {
		return
	}
	e.cancel()
	<-e.done
}

// CancelAll tears down every dial and Session and waits for them.
func (d *Dialer) CancelAll() {
	d.mu.Lock()
	for _, e := range d.dialing {
		e.cancel()
	}
	d.mu.Unlock()
	d.wg.Wait()
}

// SessionInfo describes one live dial or Session.
type SessionInfo struct {
	ContainerID string
	Address     string
	Since       time.Time
	Ready       bool // initialized and accepting Exec
}

// Sessions lists the live dials and Sessions, sorted by container ID.
func (d *Dialer) Sessions() []SessionInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]SessionInfo, 0, len(d.dialing))
	for id, e := range d.dialing {
		out = append(out, SessionInfo{ContainerID: id, Address: e.address, Since: e.since, Ready: e.sess != nil && !e.observe})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ContainerID < out[j].ContainerID })
	return out
}

// Exec runs cmd over the container's live Session. The handle streams the
// command's responses; cancelling ctx sends SIGKILL to the command. An
// untrusted Session refuses unless AllowUntrusted (session_trust.go).
func (d *Dialer) Exec(ctx context.Context, containerID string, cmd *clawkerdv1.ShellCommand, opts ...ExecOption) (*ExecHandle, error) {
	s, err := d.execSession(ctx, containerID, opts)
	if err != nil {
		return nil, err
	}
	return s.exec(ctx, cmd)
}
