// Package creds is the CP's credential gate and source (cred-forward/v1):
// it decides which agents may ask (proven by the CP, their project opted
// in through the container's dev.clawker.credentials label) and answers
// from the host, through sockets `clawker cp up` mounts into the CP: the
// host's ssh-agent and the host-side git credential server. It holds no
// credential itself.
package creds

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/gitcred"
	"github.com/clawker/clawker/internal/logger"
)

// ErrRefused is every refusal's error; the reason goes to the log only.
var ErrRefused = errors.New("credential request refused")

var errUntrusted = errors.New("agent not proven (untrusted session)")

// LabelSource reads a container's labels (Docker: labels outrank anything
// the agent could claim).
type LabelSource interface {
	ContainerLabels(ctx context.Context, containerID string) (map[string]string, error)
}

// Sources are the host credential sockets as seen from the CP; "" means
// that kind has no source and is refused.
type Sources struct {
	SSHAgentSock string
	GitCredSock  string
}

// Broker implements agent.CredAnswerer.
type Broker struct {
	labels LabelSource
	src    Sources
	log    *logger.Logger
}

// New builds a Broker.
func New(labels LabelSource, src Sources, log *logger.Logger) *Broker {
	return &Broker{labels: labels, src: src, log: logger.OrNop(log)}
}

// Maximum ssh-agent message relayed either way.
const maxSSHAgentMsg = 256 << 10

// Forwarded ssh-agent requests (draft-miller-ssh-agent): list keys and
// sign. Adding, removing, locking keys or extensions never reach the host
// agent.
const (
	sshAgentcRequestIdentities = 11
	sshAgentcSignRequest       = 13
)

// credKinds is every kind the broker can answer, in the order Kinds
// reports them (and CredEnable carries them).
var credKinds = []clawkerdv1.CredKind{clawkerdv1.CredKind_CRED_KIND_SSH_AGENT, clawkerdv1.CredKind_CRED_KIND_GIT}

// Kinds lists what containerID may ask for now. It reads the container's
// labels once for every kind: each Session asks this on connect, so a CP
// restart with N agents costs N label reads, not one per kind.
func (b *Broker) Kinds(ctx context.Context, containerID string, trusted bool) []clawkerdv1.CredKind {
	var sourced []clawkerdv1.CredKind
	for _, k := range credKinds {
		if b.source(k) == nil {
			sourced = append(sourced, k)
		}
	}
	if len(sourced) == 0 {
		return nil
	}
	optedIn, err := b.optedIn(ctx, containerID, trusted)
	if err != nil {
		return nil
	}
	var out []clawkerdv1.CredKind
	for _, k := range sourced {
		if slices.Contains(optedIn, k) {
			out = append(out, k)
		}
	}
	return out
}

// Answer gates, then answers one question from the host source.
func (b *Broker) Answer(ctx context.Context, containerID string, trusted bool, kind clawkerdv1.CredKind, data []byte) ([]byte, error) {
	refuse := func(reason error) ([]byte, error) {
		b.log.Warn().Str("event", "cred_refused").Str("container_id", containerID).Str("kind", kind.String()).
			Str("reason", reason.Error()).Msg("credential request refused")
		return nil, ErrRefused
	}
	if err := b.gate(ctx, containerID, trusted, kind); err != nil {
		return refuse(err)
	}
	var out []byte
	var err error
	switch kind {
	case clawkerdv1.CredKind_CRED_KIND_SSH_AGENT:
		out, err = b.sshAgent(ctx, data)
	case clawkerdv1.CredKind_CRED_KIND_GIT:
		out, err = gitcred.Ask(ctx, b.src.GitCredSock, data)
	}
	if err != nil {
		return refuse(err)
	}
	b.log.Info().Str("event", "cred_answered").Str("container_id", containerID).Str("kind", kind.String()).Msg("credential request answered")
	return out, nil
}

// gate fails closed: trusted agent, container labelled purpose=agent and
// opted in to kind, and a configured host source.
func (b *Broker) gate(ctx context.Context, containerID string, trusted bool, kind clawkerdv1.CredKind) error {
	if !trusted {
		// First: the reason an operator most needs to see in the log.
		return errUntrusted
	}
	if err := b.source(kind); err != nil {
		return err
	}
	optedIn, err := b.optedIn(ctx, containerID, trusted)
	if err != nil {
		return err
	}
	if !slices.Contains(optedIn, kind) {
		return errors.New("project did not opt in to this credential kind")
	}
	return nil
}

// source is nil when kind has a host source the CP can reach.
func (b *Broker) source(kind clawkerdv1.CredKind) error {
	var src string
	switch kind {
	case clawkerdv1.CredKind_CRED_KIND_SSH_AGENT:
		src = b.src.SSHAgentSock
	case clawkerdv1.CredKind_CRED_KIND_GIT:
		src = b.src.GitCredSock
	default:
		return fmt.Errorf("unknown credential kind %d", kind)
	}
	if src == "" {
		return errors.New("no host source for this kind (cp up found none)")
	}
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("host source unavailable: %w", err)
	}
	return nil
}

// optedIn is what a trusted agent container's labels opt in to; an
// untrusted Session, or a container not labelled purpose=agent, gets an
// error.
func (b *Broker) optedIn(ctx context.Context, containerID string, trusted bool) ([]clawkerdv1.CredKind, error) {
	if !trusted {
		return nil, errUntrusted
	}
	labels, err := b.labels.ContainerLabels(ctx, containerID)
	if err != nil {
		return nil, fmt.Errorf("read container labels: %w", err)
	}
	if labels[consts.LabelPurpose] != consts.PurposeAgent {
		return nil, errors.New("container is not an agent")
	}
	kinds, err := clawkerdv1.ParseCredKinds(labels[consts.LabelCredentials])
	if err != nil {
		return nil, fmt.Errorf("credentials label: %w", err)
	}
	return kinds, nil
}

// sshAgent relays one allowed message to the host agent and returns its
// reply (both without the length prefix).
func (b *Broker) sshAgent(ctx context.Context, msg []byte) ([]byte, error) {
	if len(msg) == 0 || len(msg) > maxSSHAgentMsg {
		return nil, fmt.Errorf("ssh-agent message of %d bytes", len(msg))
	}
	if t := msg[0]; t != sshAgentcRequestIdentities && t != sshAgentcSignRequest {
		return nil, fmt.Errorf("ssh-agent message type %d not forwarded", t)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", b.src.SSHAgentSock)
	if err != nil {
		return nil, fmt.Errorf("dial host ssh-agent: %w", err)
	}
	defer func() { _ = c.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	hdr := binary.BigEndian.AppendUint32(nil, uint32(len(msg)))
	if _, err := c.Write(append(hdr, msg...)); err != nil {
		return nil, fmt.Errorf("write host ssh-agent: %w", err)
	}
	var rh [4]byte
	if _, err := io.ReadFull(c, rh[:]); err != nil {
		return nil, fmt.Errorf("read host ssh-agent: %w", err)
	}
	n := binary.BigEndian.Uint32(rh[:])
	if n == 0 || n > maxSSHAgentMsg {
		return nil, fmt.Errorf("host ssh-agent reply of %d bytes", n)
	}
	out := make([]byte, n)
	if _, err := io.ReadFull(c, out); err != nil {
		return nil, fmt.Errorf("read host ssh-agent: %w", err)
	}
	return out, nil
}
