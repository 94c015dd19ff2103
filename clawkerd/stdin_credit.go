package clawkerd

// noteStdinBacklog records a command's stdin backlog if it is the largest
// seen, so tests (and a curious operator) can check that credit-paced
// stdin never queues more than the window.
func (s *Server) noteStdinBacklog(n int) {
	for {
		old := s.stdinHigh.Load()
		if int64(n) <= old || s.stdinHigh.CompareAndSwap(old, int64(n)) {
			return
		}
	}
}

// StdinBacklogHigh is the largest stdin backlog, in credit units (data
// plus a per-frame cost), that any command of this server has held.
func (s *Server) StdinBacklogHigh() int { return int(s.stdinHigh.Load()) }
