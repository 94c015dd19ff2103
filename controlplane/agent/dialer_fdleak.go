package agent

import "github.com/clawker/clawker/internal/logger"

// The spec's FD-leak ceiling covers every conn.Close of a target: a failed
// attempt's within a dial cycle, and an established Session's at its end,
// across the cycles a container is redialed in. The count is per container
// and consecutive: any successful close resets it. Once it reaches
// closeErrCeiling the target is abandoned (SessionFailed{fd-leak-ceiling},
// and later dials of it bail at once) rather than leaking without bound.

// noteClose records the outcome of closing one of containerID's conns and
// returns the consecutive failure count (0 after a success).
func (d *Dialer) noteClose(containerID string, err error) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		delete(d.closeErrs, containerID)
		return 0
	}
	if d.closeErrs == nil {
		d.closeErrs = map[string]int{}
	}
	d.closeErrs[containerID]++
	return d.closeErrs[containerID]
}

// closeFailures is containerID's consecutive close failure count.
func (d *Dialer) closeFailures(containerID string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closeErrs[containerID]
}

// forgetCloseFailures drops the count of a container that is gone.
func (d *Dialer) forgetCloseFailures(containerID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.closeErrs, containerID)
}

// closeSessionConn closes an established Session's conn at its end and
// gives up on the target when that makes the ceiling.
func (d *Dialer) closeSessionConn(containerID string, res *attemptResult, attempts int, log *logger.Logger) {
	err := d.closeConn(res.conn)
	n := d.noteClose(containerID, err)
	if err == nil {
		return
	}
	log.Warn().Str("event", "agent_session_close_failed").Err(err).Int("consecutive", n).Msg("closing session connection failed")
	if n >= closeErrCeiling {
		d.fail(containerID, res.target, FailFDLeakCeiling, attempts, err, log)
	}
}
