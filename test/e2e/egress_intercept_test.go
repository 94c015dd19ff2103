package e2e

import (
	"strings"
	"testing"

	"github.com/clawker/clawker/internal/consts"
)

// checkInterceptAndWebSocket (issue 18, part of TestEgressPolicy): an
// `intercept: true` rule terminates the agent's TLS with the per-install
// CA (the client trusts only that CA, so success proves interception),
// re-encrypts to the fake internet (whose CA the gateway trusts in test
// mode), and enforces methods and paths per request; WebSocket upgrades
// pass only where a rule says `websocket: true`, over plain HTTP and
// inside an intercepted tunnel.
func checkInterceptAndWebSocket(t *testing.T, ok func(string, ...string), fails func(string, ...string) string) {
	t.Helper()
	installCA := "-ca=" + consts.EgressCAPath
	forbidden := func(what string, args ...string) {
		t.Helper()
		if out := fails(what, args...); !strings.Contains(out, "status 403") {
			t.Errorf("%s: want the gateway's 403, got %s", what, out)
		}
	}
	ok("intercepted GET /v1/", "get", installCA, "https://icp.test/v1/items")
	forbidden("intercepted POST /v1/", "get", installCA, "-X", "POST", "https://icp.test/v1/items")
	forbidden("intercepted GET /v2/", "get", installCA, "https://icp.test/v2/items")
	// Not intercepted: the fake internet's own certificate, which the
	// install CA alone does not verify.
	if out := fails("allowed.test with only the install CA", "get", installCA, "https://allowed.test/"); !strings.Contains(out, "certificate") {
		t.Errorf("allowed.test was intercepted (or failed otherwise): %s", out)
	}

	ok("ws upgrade where the rule allows it", "ws", "ws://ws.test/chat/room")
	ok("plain GET on the non-websocket rule", "get", "http://ws.test/plain/x")
	forbidden("ws upgrade on a rule without websocket", "ws", "ws://ws.test/plain/x")
	forbidden("ws upgrade outside every path", "ws", "ws://ws.test/other")
	ok("wss upgrade inside an intercepted tunnel", "ws", installCA, "wss://wss.test/chat/room")
	forbidden("wss upgrade on an intercepted rule without websocket", "ws", installCA, "wss://wss.test/plain/x")
}
