package clawkerd

import (
	"bytes"
	"strconv"
	"testing"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// A client that honours stdin_window streams far more than the backlog
// bound into `wc -c`: clawkerd returns credit as the pipe takes frames,
// never more than was charged, the backlog stays within the window, and
// every byte is counted.
func TestStdinCreditWindow(t *testing.T) {
	const window = 256 << 10
	const total = 16 << 20 // 4x stdinBufferMax
	ts := startServer(t, nil)
	c := ts.session(t)
	sc := stages(stage("wc", "-c"))
	sc.StdinWindow = window
	c.send(shell("wc", sc))
	if r := c.next("wc"); r.GetStarted() == nil {
		t.Fatalf("want Started, got %v", r)
	}
	frame := bytes.Repeat([]byte("q"), 32<<10)
	credit, charged, granted := int64(window), int64(0), int64(0)
	for sent := 0; sent < total; sent += len(frame) {
		cost := int64(len(frame) + stdinFrameCost)
		for credit < cost {
			r := c.next("wc")
			g := r.GetStdinCredit()
			if g == nil {
				t.Fatalf("want StdinCredit while streaming, got %v", r)
			}
			credit += int64(g.GetBytes())
			granted += int64(g.GetBytes())
			if granted > charged {
				t.Fatalf("granted %d credit for %d charged", granted, charged)
			}
		}
		credit -= cost
		charged += cost
		c.send(stdinFrame("wc", frame))
	}
	c.send(&clawkerdv1.Command{CommandId: "wc", Payload: &clawkerdv1.Command_CloseStdin{CloseStdin: &clawkerdv1.CloseStdin{}}})
	var out []byte
	for {
		r := c.next("wc")
		if g := r.GetStdinCredit(); g != nil {
			granted += int64(g.GetBytes())
			continue
		}
		out = append(out, r.GetOutput().GetData()...)
		if r.GetError() != nil {
			t.Fatalf("command failed: %v", r.GetError())
		}
		if r.GetDone() != nil {
			break
		}
	}
	if got := trimLines(out); got != strconv.Itoa(total) {
		t.Fatalf("wc -c = %q, want %d", got, total)
	}
	if granted > charged {
		t.Fatalf("granted %d credit for %d charged", granted, charged)
	}
	if hi := ts.srv.StdinBacklogHigh(); hi > window {
		t.Fatalf("backlog reached %d, window %d", hi, window)
	}
	c.noMore("wc") // no StdinCredit after Done
}

// A window above the backlog bound could never be honoured: refused.
func TestStdinWindowAboveBoundRejected(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	sc := stages(stage("cat"))
	sc.StdinWindow = stdinBufferMax + 1
	c.send(shell("big", sc))
	r := c.next("big")
	if r.GetError().GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_INVALID_REQUEST {
		t.Fatalf("want INVALID_REQUEST, got %v", r)
	}
}
