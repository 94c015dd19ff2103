package daemon

import (
	stdlog "log"
	"net"
	"strings"
	"time"

	"github.com/clawker/clawker/internal/logger"
)

// httpErrorLogPeriod and httpErrorLogBurst bound net/http's error lines
// per peer: any container can loop connect/close on the token endpoint,
// and each failed handshake is one line.
const (
	httpErrorLogPeriod = 10 * time.Second
	httpErrorLogBurst  = 3
)

// newHTTPErrorLog is a net/http ErrorLog writing throttled, structured
// lines to log.
func newHTTPErrorLog(log *logger.Logger) *stdlog.Logger {
	return stdlog.New(httpErrorLog{log: log, throttle: logger.NewThrottle(httpErrorLogPeriod, httpErrorLogBurst, 0)}, "", 0)
}

// httpErrorLog adapts net/http's error logger to zerolog.
type httpErrorLog struct {
	log      *logger.Logger
	throttle *logger.Throttle
}

func (h httpErrorLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	peer := httpErrorPeer(line)
	if ok, n := h.throttle.Allow(peer); ok {
		h.log.Warn().Str("event", "token_http_error").Str("peer", peer).Str("error", line).
			Uint64("suppressed", n).Msg("token endpoint connection error")
	}
	return len(p), nil
}

// httpErrorPeer is the IP in net/http's "... from IP:port: err" lines, or
// "other" (one shared key) for a line without one.
func httpErrorPeer(line string) string {
	i := strings.Index(line, " from ")
	if i < 0 {
		return "other"
	}
	rest := line[i+len(" from "):]
	if j := strings.Index(rest, ": "); j >= 0 {
		rest = rest[:j]
	}
	host, _, err := net.SplitHostPort(rest)
	if err != nil || net.ParseIP(host) == nil {
		return "other"
	}
	return host
}
