package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	mobyclient "github.com/moby/moby/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
	"github.com/clawker/clawker/internal/rpcbuf"
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
	// without a FIN (network detach, host suspend) is noticed within
	// keepaliveTime+keepaliveTimeout and reported as SessionBroken.
	// clawkerd's enforcement floor is 5s.
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 10 * time.Second
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

// DockerInspector is the slice of the Docker API the Dialer uses;
// *mobyclient.Client satisfies it.
type DockerInspector interface {
	ContainerInspect(ctx context.Context, containerID string, options mobyclient.ContainerInspectOptions) (mobyclient.ContainerInspectResult, error)
}

// DialTarget is where and whom one attempt dials, resolved fresh per
// attempt (a restarted container may have a new IP).
type DialTarget struct {
	Address   string // host:port
	AgentName string // dev.clawker.agent label
	Project   string // dev.clawker.project label
}

// Resolver resolves a container to its DialTarget. It returns
// ErrContainerGone / ErrContainerNotRunning (wrapped) to stop retrying;
// any other error is retried.
type Resolver func(ctx context.Context, containerID string) (DialTarget, error)

// DialerOption configures a Dialer beyond the spec's New parameters.
type DialerOption func(*Dialer)

// WithResolver replaces the inspect-based address resolution (tests, and
// a CP running as a host process that reaches agents another way).
func WithResolver(r Resolver) DialerOption { return func(d *Dialer) { d.resolve = r } }

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

	base, cap, total time.Duration
	probeWindow      time.Duration
	// dialTCP dials one probe; a seam for tests.
	dialTCP func(ctx context.Context, address string) (net.Conn, error)
	// closeConn closes an attempt's conn; a seam for the FD-leak test.
	closeConn func(*grpc.ClientConn) error
	now       func() time.Time

	mu      sync.Mutex
	dialing map[string]*dialEntry
	wg      sync.WaitGroup
}

// dialEntry is one live dial goroutine: the dedup key, its cancel, and
// its Session once initialized (for Exec).
type dialEntry struct {
	cancel  context.CancelFunc
	done    chan struct{}
	sess    *session
	address string
	since   time.Time
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

// inspectTarget resolves the container's clawker-net IP by inspect.
func (d *Dialer) inspectTarget(ctx context.Context, containerID string) (DialTarget, error) {
	res, err := d.docker.ContainerInspect(ctx, containerID, mobyclient.ContainerInspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return DialTarget{}, fmt.Errorf("%w: %v", ErrContainerGone, err)
		}
		return DialTarget{}, fmt.Errorf("inspect %s: %w", containerID, err)
	}
	c := res.Container
	if c.State == nil || !c.State.Running {
		return DialTarget{}, ErrContainerNotRunning
	}
	var t DialTarget
	if c.Config != nil {
		t.AgentName = c.Config.Labels[consts.LabelAgent]
		t.Project = c.Config.Labels[consts.LabelProject]
	}
	if c.NetworkSettings == nil || c.NetworkSettings.Networks[consts.NetworkName] == nil {
		return t, fmt.Errorf("container %s not attached to %s yet", containerID, consts.NetworkName)
	}
	ip := c.NetworkSettings.Networks[consts.NetworkName].IPAddress
	if !ip.IsValid() {
		return t, fmt.Errorf("container %s has no %s address yet", containerID, consts.NetworkName)
	}
	t.Address = netip.AddrPortFrom(ip, consts.PortSession).String()
	return t, nil
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
		out = append(out, SessionInfo{ContainerID: id, Address: e.address, Since: e.since, Ready: e.sess != nil})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ContainerID < out[j].ContainerID })
	return out
}

// Exec runs cmd over the container's live Session. The handle streams the
// command's responses; cancelling ctx sends SIGKILL to the command.
func (d *Dialer) Exec(ctx context.Context, containerID string, cmd *clawkerdv1.ShellCommand) (*ExecHandle, error) {
	d.mu.Lock()
	e, ok := d.dialing[containerID]
	var s *session
	if ok {
		s = e.sess
	}
	d.mu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("exec in %s: %w", containerID, ErrNoSession)
	}
	return s.exec(ctx, cmd)
}

// backoff is exponential with full jitter: uniform in [0, backoffCeiling].
func backoff(base, maxBackoff time.Duration, attempt int) time.Duration {
	return time.Duration(rand.Int64N(int64(backoffCeiling(base, maxBackoff, attempt)) + 1))
}

// backoffCeiling is min(cap, base·2^(attempt-1)), the upper bound of
// attempt's jittered wait.
func backoffCeiling(base, maxBackoff time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < maxBackoff; i++ {
		d *= 2
	}
	if d > maxBackoff {
		d = maxBackoff
	}
	return d
}

// attemptResult is one established Session, handed from connect to serve.
type attemptResult struct {
	conn   *grpc.ClientConn
	stream clawkerdv1.ClawkerdService_SessionClient
	cancel context.CancelFunc
	ack    *clawkerdv1.HelloAck
	peer   peerIdentity
	target DialTarget
}

// runDial is one dial cycle: retry until established (or budget spent,
// container gone, ctx cancelled), then serve the Session.
func (d *Dialer) runDial(ctx context.Context, containerID string, e *dialEntry) {
	log := d.log.With("container_id", containerID)
	start := d.now()
	deadline := start.Add(d.total)
	attempts, closeErrs := 0, 0
	connecting, probed := false, false
	var last DialTarget
	var lastErr error
	for {
		if ctx.Err() != nil {
			if connecting {
				d.bus.Publish(SessionClosed{ContainerID: containerID, AgentName: last.AgentName,
					Project: last.Project, Reason: "cancelled", At: d.now()})
			}
			return
		}
		attempts++
		t, err := d.resolve(ctx, containerID)
		if err == nil {
			last = t
			d.mu.Lock()
			e.address = t.Address
			d.mu.Unlock()
			if !connecting {
				connecting = true
				d.bus.Publish(SessionConnecting{ContainerID: containerID, AgentName: t.AgentName,
					Project: t.Project, Address: t.Address, At: d.now()})
			}
			var pre net.Conn
			if !probed {
				probed = true
				pre = d.awaitListener(ctx, t.Address, deadline.Sub(d.now()), log)
			}
			var res *attemptResult
			var conn *grpc.ClientConn
			res, conn, err = d.connect(ctx, t, pre)
			if err == nil {
				d.serve(ctx, containerID, e, res, attempts, log)
				return
			}
			if conn != nil {
				if cerr := d.closeConn(conn); cerr != nil {
					closeErrs++
					log.Warn().Str("event", "agent_dial_close_failed").Err(cerr).Int("consecutive", closeErrs).
						Msg("closing a failed attempt's connection failed")
					if closeErrs >= closeErrCeiling {
						d.fail(containerID, last, FailFDLeakCeiling, attempts, cerr, log)
						return
					}
				} else {
					closeErrs = 0
				}
			}
		}
		lastErr = err
		switch {
		case ctx.Err() != nil:
			continue // reported at the loop top
		case errors.Is(err, ErrContainerGone):
			d.fail(containerID, last, FailContainerGone, attempts, err, log)
			return
		case errors.Is(err, ErrContainerNotRunning):
			d.fail(containerID, last, FailContainerNotRunning, attempts, err, log)
			return
		}
		remaining := deadline.Sub(d.now())
		if remaining <= 0 {
			d.fail(containerID, last, FailConnectTimeout, attempts, lastErr, log)
			return
		}
		wait := backoff(d.base, d.cap, attempts)
		if wait > remaining {
			wait = remaining
		}
		log.Debug().Str("event", "agent_dial_retry").Err(err).Int("attempt", attempts).Dur("backoff", wait).Msg("dial attempt failed")
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
		case <-timer.C:
		}
	}
}

func (d *Dialer) fail(containerID string, t DialTarget, reason string, attempts int, err error, log *logger.Logger) {
	log.Error().Str("event", "agent_dial_failed").Str("reason", reason).Int("attempts", attempts).
		Err(err).Msg("dial cycle gave up")
	d.bus.Publish(SessionFailed{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project,
		Address: t.Address, Reason: reason, Attempts: attempts, At: d.now()})
}

// connect makes one attempt: TLS (permissive), open Session, Hello →
// HelloAck. On failure the conn (if any) is returned for the caller to
// close and count.
//
// pre, when non-nil, is an already established TCP connection to
// t.Address (an accepted listener probe): gRPC's first dial takes it
// instead of dialing (later dials, if any, dial normally). connect owns
// pre: it is closed if gRPC never took it.
func (d *Dialer) connect(ctx context.Context, t DialTarget, pre net.Conn) (*attemptResult, *grpc.ClientConn, error) {
	rec := &peerRecorder{}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(clientTLS(d.cert, d.caPool, rec))),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout, PermitWithoutStream: true}),
		// Exec output arrives in ~1 MiB messages; gRPC's default codec
		// would zero a 1 MiB pooled buffer for each one it decodes.
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rpcbuf.NewCodec())),
	}
	if pre != nil {
		h := &handoff{conn: pre}
		defer h.closeUntaken()
		opts = append(opts, grpc.WithContextDialer(h.dial(d.dialTCP)))
	}
	conn, err := grpc.NewClient("passthrough:///"+t.Address, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("grpc client %s: %w", t.Address, err)
	}
	sctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(handshakeTimeout, cancel)
	stream, err := clawkerdv1.NewClawkerdServiceClient(conn).Session(sctx)
	if err == nil {
		err = stream.Send(&clawkerdv1.Command{CommandId: "hello", Payload: &clawkerdv1.Command_Hello{Hello: &clawkerdv1.Hello{}}})
	}
	var ack *clawkerdv1.HelloAck
	if err == nil {
		var resp *clawkerdv1.Response
		resp, err = stream.Recv()
		if err == nil {
			if ack = resp.GetHelloAck(); ack == nil {
				err = fmt.Errorf("expected HelloAck, got %T", resp.GetPayload())
			}
		}
	}
	if !timer.Stop() && err == nil {
		err = errors.New("handshake timed out")
	}
	if err != nil {
		cancel()
		return nil, conn, fmt.Errorf("session %s: %w", t.Address, err)
	}
	return &attemptResult{conn: conn, stream: stream, cancel: cancel, ack: ack, peer: rec.get(), target: t}, nil, nil
}
