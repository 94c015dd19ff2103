package admin

import (
	"context"
	"time"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
)

// execWaitPoll is how often exec --wait re-reads the agent.
const execWaitPoll = 20 * time.Millisecond

// awaitTrusted serves exec --wait (ExecStart.wait_millis): while the agent
// is untrusted (e.g. its Session is being redialed after a network
// change), re-read it until it is trusted, the wait ends or the caller
// goes away. It decides nothing: the trust gate still runs on the agent it
// returns, so an agent that stays untrusted is refused as before.
func (s *Server) awaitTrusted(ctx context.Context, start *adminv1.ExecStart, ag *adminv1.Agent) *adminv1.Agent {
	wait := time.Duration(start.GetWaitMillis()) * time.Millisecond
	if wait <= 0 || start.GetAllowUntrusted() || adminv1.UntrustedBecause(ag) == "" {
		return ag
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(execWaitPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ag
		case <-deadline.C:
			return ag
		case <-tick.C:
		}
		next, err := s.resolve(start.GetAgent())
		if err != nil || next.GetContainerId() != ag.GetContainerId() {
			return ag // gone or replaced: the gate answers for the original
		}
		if ag = next; adminv1.UntrustedBecause(ag) == "" {
			return ag
		}
	}
}
