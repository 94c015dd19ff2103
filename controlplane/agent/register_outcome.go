package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/logger"
)

// withRegisterTimeout shortens the wait for RegisterDone (tests).
func withRegisterTimeout(d time.Duration) DialerOption {
	return func(dl *Dialer) {
		if d > 0 {
			dl.registerTimeout = d
		}
	}
}

// registerWait is how long serve waits for RegisterDone.
func (d *Dialer) registerWait() time.Duration {
	if d.registerTimeout > 0 {
		return d.registerTimeout
	}
	return registerReplyTimeout
}

// registerErrReason classifies a Register that produced no RegisterDone:
// the wait ran out (register_timeout) or the Session carrying it broke
// (register_transport). Neither says anything about the agent's identity.
func registerErrReason(err error) overseer.UntrustedReason {
	if errors.Is(err, context.DeadlineExceeded) {
		return overseer.ReasonRegisterTimeout
	}
	return overseer.ReasonRegisterTransport
}

// identityRefusalMarkers are what clawkerd's error text carries when the
// CP's gate refused it: the token endpoint's OAuth errors and the
// AgentService's gRPC codes. They win over any CP-side marker.
var identityRefusalMarkers = []string{
	"code = PermissionDenied", "code = Unauthenticated", "code = InvalidArgument",
	`"invalid_client"`, `"invalid_grant"`, `"invalid_request"`, `"invalid_scope"`,
	`"unauthorized_client"`, `"unsupported_grant_type"`, `"access_denied"`,
	"registration rejected",
}

// cpSideMarkers are the texts Go's net/http, oauth2 and gRPC clients put
// in clawkerd's error when the CP was unreachable, overloaded or failing.
var cpSideMarkers = []string{
	// Network.
	"connection refused", "connection reset", "i/o timeout", "no route to host",
	"network is unreachable", "no such host", "broken pipe", "TLS handshake timeout",
	"Client.Timeout exceeded", "context deadline exceeded", "unexpected EOF",
	// Token endpoint: OAuth server-side errors and 5xx/429 without a body.
	`"server_error"`, `"temporarily_unavailable"`, `"slow_down"`,
	"cannot fetch token: 429", "cannot fetch token: 5",
	// AgentService.
	"code = Unavailable", "code = DeadlineExceeded", "code = ResourceExhausted",
	"code = Internal", "code = Aborted",
}

// registerReplyReason classifies clawkerd's RegisterDone{ok:false} text.
// The text is agent-controlled: a CP-side classification only ever makes
// the failure advisory (untrusted, not contained), never trusted, and
// anything not recognised stays register_failed, which the containment
// policy enforces (fail closed).
func registerReplyReason(reason string) overseer.UntrustedReason {
	// clawkerd's own marker, first in its text: an honest agent that a slow
	// CP made spend its assertion. Advisory, and like the CP-side reasons
	// agent-selectable: it buys "untrusted, not contained", nothing more.
	if strings.HasPrefix(reason, clawkerdv1.RegisterAssertionSpent) {
		return overseer.ReasonRegisterAssertionSpent
	}
	for _, m := range identityRefusalMarkers {
		if strings.Contains(reason, m) {
			return overseer.ReasonRegisterFailed
		}
	}
	for _, m := range cpSideMarkers {
		if strings.Contains(reason, m) {
			return overseer.ReasonRegisterCPUnavailable
		}
	}
	return overseer.ReasonRegisterFailed
}

// registerAttempts bounds Register tries on one Session. Only a failure
// that says the CP side or the path failed (register_cp_unavailable) is
// retried: it says nothing about the agent, and one flooded second must
// not leave an honest agent untrusted until its next restart. clawkerd
// keeps an exchanged token, so a retry never needs the spent assertion.
const registerAttempts = 3

// registerBackoff is the pause before retry n (1-based): n seconds, or n
// × the test option's unit.
func (d *Dialer) registerBackoff(n int) time.Duration {
	unit := time.Second
	if d.registerPause > 0 {
		unit = d.registerPause
	}
	return time.Duration(n) * unit
}

// withRegisterPause shortens the pause between Register retries (tests).
func withRegisterPause(unit time.Duration) DialerOption {
	return func(dl *Dialer) { dl.registerPause = unit }
}

// registerRetrying runs register, retrying CP-side failures (see
// registerAttempts). Identity refusals, timeouts and a broken stream end
// it at once, as before.
func (d *Dialer) registerRetrying(ctx context.Context, stream clawkerdv1.ClawkerdService_SessionClient, cancelStream context.CancelFunc,
	containerID string, peer peerIdentity, log *logger.Logger) (bool, string, error) {
	id := "register"
	for n := 1; ; n++ {
		ok, reason, err := d.register(ctx, stream, cancelStream, id, d.registerWait(), containerID, peer)
		if ok || err != nil || n >= registerAttempts || registerReplyReason(reason) != overseer.ReasonRegisterCPUnavailable {
			return ok, reason, err
		}
		wait := d.registerBackoff(n)
		log.Warn().Str("event", "register_retry").Int("attempt", n).Dur("backoff", wait).Str("reason", reason).
			Msg("register failed on the CP side; retrying on the same Session")
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, reason, ctx.Err() // a teardown, not a Register outcome
		case <-t.C:
		}
		// A fresh id: the first one may still be held by clawkerd's
		// dispatcher for a moment after its Done.
		id = fmt.Sprintf("register-%d", n+1)
	}
}
