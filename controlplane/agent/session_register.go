package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/auth"
)

// registry classification of a live peer.
type classification int

const (
	classMatch classification = iota
	classMiss
	classMismatch
	classError
)

// classify compares the live peer's cert with the registry row for
// containerID: Match, Miss (no usable row: Register heals it), Mismatch,
// or Error (the registry could not be read).
func (d *Dialer) classify(containerID string, peer peerIdentity) (classification, error) {
	entry, err := d.agents.LookupByContainerID(containerID)
	switch {
	case errors.Is(err, ErrUnknownAgent):
		return classMiss, nil
	case errors.Is(err, ErrMalformedEntry):
		// The spec's miss: the row's identity is unusable, and Register
		// (the handler evicts and rewrites it) heals it from the live peer.
		return classMiss, nil
	case err != nil:
		return classError, fmt.Errorf("registry lookup: %w", err)
	case entry == nil:
		return classMiss, nil
	case peer.present && entry.Thumbprint == peer.thumbprint:
		return classMatch, nil
	default:
		return classMismatch, nil
	}
}

// reasonRegistryRowLost is register's failure reason when clawkerd reports
// success but the registry holds no row for the container.
const reasonRegistryRowLost = "register reported ok but the registry has no row for this container (registry lost?)"

// reasonRegistryLookupFailed prefixes register's failure reason when the
// CP's own double-check could not read the registry.
const reasonRegistryLookupFailed = "register reported ok but registry lookup failed: "

// registerReplyTimeout bounds the wait for RegisterDone. clawkerd gives
// its own token exchange + Register call 30s (its registerTimeout); twice
// that leaves room for a slow CP without letting a wedged clawkerd hold
// the Session in the register step forever.
const registerReplyTimeout = 60 * time.Second

// register sends RegisterRequired and awaits RegisterDone for at most
// timeout; past that it tears the stream down (cancelStream) and fails,
// which ends the Session. A RegisterDone that claims success is
// double-checked against the registry: the row must exist and carry the
// live cert's thumbprint.
func (d *Dialer) register(ctx context.Context, stream clawkerdv1.ClawkerdService_SessionClient, cancelStream context.CancelFunc,
	id string, timeout time.Duration, containerID string, peer peerIdentity) (bool, string, error) {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Recv and Send take no context: ending the stream is what unblocks
	// them. stop runs before cancel (LIFO), so a normal return keeps it.
	stop := context.AfterFunc(rctx, cancelStream)
	defer stop()
	wrap := func(what string, err error) error {
		if errors.Is(rctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("no RegisterDone within %s: %w", timeout, context.DeadlineExceeded)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := stream.Send(&clawkerdv1.Command{CommandId: id, Payload: &clawkerdv1.Command_RegisterRequired{
		RegisterRequired: &clawkerdv1.RegisterRequired{}}}); err != nil {
		return false, "", wrap("send RegisterRequired", err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return false, "", wrap("await RegisterDone", err)
		}
		if resp.GetCommandId() != id {
			continue
		}
		if e := resp.GetError(); e != nil {
			return false, fmt.Sprintf("%s: %s", e.GetCode(), e.GetMessage()), nil
		}
		rd := resp.GetRegisterDone()
		if rd == nil {
			continue
		}
		if !rd.GetOk() {
			reason := rd.GetError()
			if reason == "" {
				reason = "register failed"
			}
			return false, reason, nil
		}
		entry, err := d.agents.LookupByContainerID(containerID)
		switch {
		case errors.Is(err, ErrUnknownAgent):
			// clawkerd believes it is registered (it answers ok without
			// calling Register) but the registry has no row: it was lost
			// under a running agent. See overseer.ReasonRegistryRowLost.
			return false, reasonRegistryRowLost, nil
		case err != nil:
			return false, reasonRegistryLookupFailed + err.Error(), nil
		case entry == nil, !peer.present || entry.Thumbprint != peer.thumbprint:
			return false, "register reported ok but the registry row does not carry the live cert " +
				auth.ThumbprintHex(peer.thumbprint), nil
		}
		return true, "", nil
	}
}
