package agent

import (
	"context"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// CredAnswerer answers an agent's credential questions (cred-forward/v1):
// ssh-agent messages and git credential requests, from the host. It owns
// the gate: which agents may ask (trusted, project opted in) and what.
// The Dialer only relays; it never holds a credential.
type CredAnswerer interface {
	// Kinds is what containerID may ask for; nil when nothing (the CP then
	// never sends CredEnable, and clawkerd refuses locally).
	Kinds(ctx context.Context, containerID string, trusted bool) []clawkerdv1.CredKind
	// Answer answers one question; any error is a refusal, its reason
	// logged by the answerer and never sent to the agent.
	Answer(ctx context.Context, containerID string, trusted bool, kind clawkerdv1.CredKind, data []byte) ([]byte, error)
}

// WithCredentials lets the Dialer's Sessions answer credential questions
// through c. Without it no CredEnable is ever sent.
func WithCredentials(c CredAnswerer) DialerOption { return func(d *Dialer) { d.creds = c } }

// credAnswerTimeout bounds one answer (a host git credential helper may
// be slow); clawkerd gives up on its side a little later.
const credAnswerTimeout = 25 * time.Second

// credMaxInFlight bounds answers running per Session; beyond it a
// question is refused at once rather than queued.
const credMaxInFlight = 8

// enableCreds sends CredEnable when the peer speaks cred-forward/v1 and
// the answerer allows it anything; called after the init plan, once the
// demultiplexer is about to own the stream.
func (s *session) enableCreds(ctx context.Context, c CredAnswerer, ack *clawkerdv1.HelloAck) {
	if c == nil || !clawkerdv1.HasCapability(ack, clawkerdv1.CapCredForward) {
		return
	}
	kinds := c.Kinds(ctx, s.containerID, s.trusted)
	if len(kinds) == 0 {
		return
	}
	s.creds, s.credSem = c, make(chan struct{}, credMaxInFlight)
	if err := s.send(ctx, &clawkerdv1.Command{CommandId: "cred-enable", Payload: &clawkerdv1.Command_CredEnable{
		CredEnable: &clawkerdv1.CredEnable{Kinds: kinds}}}); err != nil {
		s.log.Warn().Str("event", "agent_cred_enable_failed").Err(err).Msg("credential forwarding not enabled")
		return
	}
	s.log.Info().Str("event", "agent_cred_enabled").Int("kinds", len(kinds)).Msg("credential forwarding enabled")
}

// answerCred answers one CredRequest off the receive loop. Every failure
// is the same ok=false; s.creds logged why.
func (s *session) answerCred(id string, req *clawkerdv1.CredRequest) {
	refuse := func() {
		ctx, cancel := context.WithTimeout(context.Background(), credAnswerTimeout)
		defer cancel()
		_ = s.send(ctx, &clawkerdv1.Command{CommandId: id, Payload: &clawkerdv1.Command_CredReply{CredReply: &clawkerdv1.CredReply{}}})
	}
	if s.creds == nil {
		// Never enabled: a peer asking anyway gets the generic refusal.
		s.log.Warn().Str("event", "agent_cred_refused").Str("reason", "credential forwarding not enabled for this session").Msg("credential request refused")
		go func() { defer s.recoverLog("cred_refuse"); refuse() }()
		return
	}
	select {
	case s.credSem <- struct{}{}:
	default:
		s.log.Warn().Str("event", "agent_cred_refused").Str("reason", "too many credential requests in flight").Msg("credential request refused")
		go func() { defer s.recoverLog("cred_refuse"); refuse() }()
		return
	}
	go func() {
		defer s.recoverLog("cred_answer")
		defer func() { <-s.credSem }()
		ctx, cancel := context.WithTimeout(context.Background(), credAnswerTimeout)
		defer cancel()
		go func() {
			select {
			case <-s.gone:
				cancel()
			case <-ctx.Done():
			}
		}()
		data, err := s.creds.Answer(ctx, s.containerID, s.trusted, req.GetKind(), req.GetData())
		if err != nil {
			refuse()
			return
		}
		_ = s.send(ctx, &clawkerdv1.Command{CommandId: id, Payload: &clawkerdv1.Command_CredReply{
			CredReply: &clawkerdv1.CredReply{Ok: true, Data: data}}})
	}()
}
