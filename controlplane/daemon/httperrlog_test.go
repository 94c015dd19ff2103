package daemon

import (
	stdlog "log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/logger"
)

// countingWriter counts the lines net/http hands to the error log.
type countingWriter struct {
	n     atomic.Int64
	inner httpErrorLog
}

func (c *countingWriter) Write(p []byte) (int, error) {
	defer c.n.Add(1)
	return c.inner.Write(p)
}

// TestHTTPErrorLogThrottled: a peer looping bare TCP connect/close on the
// TLS token endpoint makes one net/http error line per connection; the
// log must stay bounded and report what it dropped.
func TestHTTPErrorLogThrottled(t *testing.T) {
	var out syncBuf
	cw := &countingWriter{inner: httpErrorLog{log: logger.New(&out, "debug", "test"),
		throttle: logger.NewThrottle(httpErrorLogPeriod, httpErrorLogBurst, 0)}}
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = stdlog.New(cw, "", 0)
	srv.StartTLS()
	defer srv.Close()

	const conns = 1000
	start := time.Now()
	for range conns {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	waitFor(t, "every handshake error reached the log", func() bool { return cw.n.Load() >= conns })
	windows := int(time.Since(start)/httpErrorLogPeriod) + 1
	lines := strings.Count(out.String(), `"event":"token_http_error"`)
	if lines < 1 || lines > windows*httpErrorLogBurst {
		t.Fatalf("%d error lines for %d connections over %d window(s), want 1..%d", lines, conns, windows, windows*httpErrorLogBurst)
	}
	if !strings.Contains(out.String(), `"peer":"127.0.0.1"`) {
		t.Fatalf("lines lack the peer: %s", out.String())
	}
}

func TestHTTPErrorPeer(t *testing.T) {
	for line, want := range map[string]string{
		"http: TLS handshake error from 172.18.0.5:41234: EOF":              "172.18.0.5",
		"http: TLS handshake error from [fd00::5]:41234: remote error: bad": "fd00::5",
		"http: Accept error: too many open files; retrying in 5ms":          "other",
		"http: TLS handshake error from nonsense: EOF":                      "other",
	} {
		if got := httpErrorPeer(line); got != want {
			t.Errorf("%q: %q, want %q", line, got, want)
		}
	}
}
