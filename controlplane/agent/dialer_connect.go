package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/backoff"
	"github.com/clawker/clawker/internal/logger"
	"github.com/clawker/clawker/internal/rpcbuf"
)

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
	attempts := 0
	connecting, probed := false, false
	var last DialTarget
	var lastErr error
	if n := d.closeFailures(containerID); n >= closeErrCeiling {
		d.fail(containerID, last, FailFDLeakCeiling, attempts,
			fmt.Errorf("%d consecutive connection close failures", n), log)
		return
	}
	for {
		if ctx.Err() != nil {
			if connecting {
				d.bus.Publish(SessionClosed{Subject: overseer.Subject{ContainerID: containerID, AgentName: last.AgentName,
					Project: last.Project}, Reason: "cancelled", At: d.now()})
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
				d.bus.Publish(SessionConnecting{Subject: overseer.Subject{ContainerID: containerID, AgentName: t.AgentName,
					Project: t.Project}, Address: t.Address, At: d.now()})
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
				cerr := d.closeConn(conn)
				if n := d.noteClose(containerID, cerr); cerr != nil {
					log.Warn().Str("event", "agent_dial_close_failed").Err(cerr).Int("consecutive", n).
						Msg("closing a failed attempt's connection failed")
					if n >= closeErrCeiling {
						d.fail(containerID, last, FailFDLeakCeiling, attempts, cerr, log)
						return
					}
				}
			}
		}
		lastErr = err
		switch {
		case ctx.Err() != nil:
			continue // reported at the loop top
		case errors.Is(err, ErrContainerGone):
			d.forgetCloseFailures(containerID)
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
		wait := backoff.FullJitter(d.base, d.cap, attempts)
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
	d.bus.Publish(SessionFailed{Subject: overseer.Subject{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project},
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
		// exec -i stdin leaves in one syscall per flush, not one per
		// 16 KiB TLS record (see rpcbuf.BatchWrites).
		grpc.WithTransportCredentials(rpcbuf.BatchWrites(credentials.NewTLS(clientTLS(d.cert, d.caPool, rec)))),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout, PermitWithoutStream: true}),
		// Exec output arrives in ~1 MiB messages; gRPC's default codec
		// would zero a 1 MiB pooled buffer for each one it decodes.
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rpcbuf.NewCodec())),
		// No framer read buffer: TLS already buffers each record it reads,
		// so gRPC's 32 KiB bufio.Reader (pinned for the Session's life: its
		// pooled reader only works on a bare TCP conn) saved copies, not
		// syscalls, at 32 KiB per Session.
		grpc.WithReadBufferSize(0),
		// Received frames come from a pool that does not zero them.
		experimental.WithBufferPool(rpcbuf.TransportPool()),
	}
	if pre != nil {
		h := &handoff{conn: pre}
		defer h.closeUntaken()
		opts = append(opts, grpc.WithContextDialer(keepaliveDialer(h.dial(d.dialTCP))))
	} else {
		opts = append(opts, grpc.WithContextDialer(keepaliveDialer(d.dialTCP)))
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
