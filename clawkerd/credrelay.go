package clawkerd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/logger"
)

// errCredRefused is every failed credential question, whatever the cause
// (no enabled Session, CP refusal, timeout): the asker learns nothing more.
var errCredRefused = errors.New("credential request refused")

// credAskTimeout bounds one question; the CP may run the host's git
// credential helper, which can take a while, but never forever.
const credAskTimeout = 30 * time.Second

// credMaxPending bounds questions in flight, so a looping client in the
// agent cannot queue unbounded work on the Session.
const credMaxPending = 64

// credRelay carries credential questions from clawkerd's in-container
// sockets to the CP over the latest Session that sent CredEnable
// (cred-forward/v1), and routes each CredReply back to its asker.
type credRelay struct {
	log     *logger.Logger
	timeout time.Duration
	seq     atomic.Uint64

	mu      sync.Mutex
	sess    *session
	kinds   map[clawkerdv1.CredKind]bool
	pending map[string]*credWait
}

type credWait struct {
	sess *session
	ch   chan *clawkerdv1.CredReply // cap 1
}

func newCredRelay(log *logger.Logger) *credRelay {
	return &credRelay{log: log, timeout: credAskTimeout, pending: map[string]*credWait{}}
}

// enable makes s the Session questions go to, for kinds.
func (r *credRelay) enable(s *session, kinds []clawkerdv1.CredKind) {
	m := map[clawkerdv1.CredKind]bool{}
	for _, k := range kinds {
		m[k] = true
	}
	r.mu.Lock()
	r.sess, r.kinds = s, m
	r.mu.Unlock()
	s.log.Info().Str("event", "cred_forward_enabled").Int("kinds", len(m)).Msg("credential forwarding enabled on this session")
}

// drop forgets s when it ends: its unanswered questions fail now.
func (r *credRelay) drop(s *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sess == s {
		r.sess, r.kinds = nil, nil
	}
	for id, w := range r.pending {
		if w.sess == s {
			delete(r.pending, id)
			close(w.ch)
		}
	}
}

// reply hands a CredReply to its asker; false when nobody on s waits.
func (r *credRelay) reply(s *session, id string, rep *clawkerdv1.CredReply) bool {
	r.mu.Lock()
	w := r.pending[id]
	if w == nil || w.sess != s {
		r.mu.Unlock()
		return false
	}
	delete(r.pending, id)
	r.mu.Unlock()
	w.ch <- rep
	return true
}

// ask sends one question and waits for its answer.
func (r *credRelay) ask(ctx context.Context, kind clawkerdv1.CredKind, data []byte) ([]byte, error) {
	w := &credWait{ch: make(chan *clawkerdv1.CredReply, 1)}
	r.mu.Lock()
	s := r.sess
	switch {
	case s == nil || !r.kinds[kind]:
		r.mu.Unlock()
		r.log.Debug().Str("event", "cred_request_unrouted").Str("kind", kind.String()).Msg("no session forwards this credential kind")
		return nil, errCredRefused
	case len(r.pending) >= credMaxPending:
		r.mu.Unlock()
		r.log.Warn().Str("event", "cred_request_overload").Msg("too many credential requests in flight")
		return nil, errCredRefused
	}
	w.sess = s
	id := fmt.Sprintf("cred/%d", r.seq.Add(1))
	r.pending[id] = w
	r.mu.Unlock()
	forget := func() {
		r.mu.Lock()
		if r.pending[id] == w {
			delete(r.pending, id)
		}
		r.mu.Unlock()
	}
	s.send(&clawkerdv1.Response{CommandId: id, Payload: &clawkerdv1.Response_CredRequest{
		CredRequest: &clawkerdv1.CredRequest{Kind: kind, Data: data}}})
	t := time.NewTimer(r.timeout)
	defer t.Stop()
	select {
	case rep, ok := <-w.ch:
		if !ok || !rep.GetOk() {
			return nil, errCredRefused
		}
		return rep.GetData(), nil
	case <-t.C:
		forget()
		r.log.Warn().Str("event", "cred_request_timeout").Str("kind", kind.String()).Msg("no credential reply in time")
		return nil, errCredRefused
	case <-ctx.Done():
		forget()
		return nil, errCredRefused
	}
}
