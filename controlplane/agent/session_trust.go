package agent

import (
	"context"
	"fmt"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// ExecOption adjusts one Exec.
type ExecOption func(*execOptions)

type execOptions struct {
	allowUntrusted bool
	wait           time.Duration
}

// AllowUntrusted lets Exec run on a pinned Session that is not trusted
// (registry mismatch, failed Register, name/project findings): the
// operator's explicit --allow-untrusted. A Session that failed the pin
// takes no command either way.
func AllowUntrusted(allow bool) ExecOption {
	return func(o *execOptions) { o.allowUntrusted = allow }
}

// WaitForSession lets Exec, when the container has no live Session yet
// (a redial in progress), wait up to d for one instead of failing at once
// (exec --wait). The trust check still applies to the Session it gets.
func WaitForSession(d time.Duration) ExecOption {
	return func(o *execOptions) { o.wait = d }
}

// execSession is the container's live Session if it may run a command:
// the trust check sits here, next to the send, and not only at the admin
// layer, so a Session replaced after the admin's check is checked again.
func (d *Dialer) execSession(ctx context.Context, containerID string, opts []ExecOption) (*session, error) {
	var o execOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.wait > 0 {
		if err := d.waitSession(ctx, containerID, o.wait); err != nil {
			return nil, err
		}
	}
	d.mu.Lock()
	e, ok := d.dialing[containerID]
	var s *session
	observe := false
	if ok {
		s, observe = e.sess, e.observe
	}
	d.mu.Unlock()
	switch {
	case observe:
		return nil, fmt.Errorf("exec in %s: the peer's cert failed the pin: %w", containerID, ErrSessionUntrusted)
	case s == nil:
		return nil, fmt.Errorf("exec in %s: %w", containerID, ErrNoSession)
	case !s.trusted && !o.allowUntrusted:
		return nil, fmt.Errorf("exec in %s: the session is not trusted: %w", containerID, ErrSessionUntrusted)
	}
	return s, nil
}

// ExecBuild runs the command build makes from the HelloAck of the very
// Session that runs it (its user, WORKDIR, capabilities), so a Session
// replaced in between cannot pair one clawkerd's defaults with another.
func (d *Dialer) ExecBuild(ctx context.Context, containerID string, build func(*clawkerdv1.HelloAck) (*clawkerdv1.ShellCommand, error), opts ...ExecOption) (*ExecHandle, error) {
	s, err := d.execSession(ctx, containerID, opts)
	if err != nil {
		return nil, err
	}
	cmd, err := build(s.ack)
	if err != nil {
		return nil, err
	}
	return s.exec(ctx, cmd)
}
