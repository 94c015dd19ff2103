package clawkerd

import (
	"fmt"
	"slices"
	"testing"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// A command id is free the moment its Done is on the wire: a CP reusing
// it at once must not draw "duplicate live command_id". The id used to be
// released only after the reply was sent, so a quick reuse lost that race
// now and then (TestRequestValidationAndIDs's "reuse" flake).
func TestIDFreeAsSoonAsDoneArrives(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	for i := range 200 {
		want := fmt.Sprint("round-", i)
		res := c.run("same", stages(stage("echo", want)))
		if res.err != nil || res.done == nil || trimLines(res.output) != want {
			t.Fatalf("round %d: reuse right after Done: %+v output %q", i, res, res.output)
		}
	}
}

// Stdin, CloseStdin and Signal that race a command's Done are dropped:
// an Error on that id after (or, worse, before) the Done could be taken
// by the CP for the command's end. Never-seen ids still draw
// UNKNOWN_COMMAND_ID.
func TestFramesRacingDoneAreDropped(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	if res := c.run("quick", stages(stage("true"))); res.done == nil {
		t.Fatalf("quick: %+v", res)
	}
	c.send(stdinFrame("quick", []byte("late")))
	c.send(&clawkerdv1.Command{CommandId: "quick", Payload: &clawkerdv1.Command_CloseStdin{CloseStdin: &clawkerdv1.CloseStdin{}}})
	c.send(&clawkerdv1.Command{CommandId: "quick", Payload: &clawkerdv1.Command_Signal{Signal: &clawkerdv1.Signal{Signo: 9}}})
	// The stream is ordered: once the ghost's Error is here, any reply to
	// the frames above would be too.
	c.send(&clawkerdv1.Command{CommandId: "ghost", Payload: &clawkerdv1.Command_CloseStdin{CloseStdin: &clawkerdv1.CloseStdin{}}})
	if e := c.next("ghost").GetError(); e.GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_UNKNOWN_COMMAND_ID {
		t.Fatalf("never-seen id: want UNKNOWN_COMMAND_ID, got %v", e)
	}
	c.noMore("quick")
}

// HelloAck announces this build's capabilities, so a CP uses flow control
// with it (and only with peers that announce it).
func TestHelloAckAnnouncesCapabilities(t *testing.T) {
	ts := startServer(t, nil)
	ack := ts.session(t).hello()
	if !clawkerdv1.HasCapability(ack, clawkerdv1.CapFlowControl) || !slices.Equal(ack.GetCapabilities(), clawkerdv1.Announced) {
		t.Fatalf("capabilities %q, want %q", ack.GetCapabilities(), clawkerdv1.Announced)
	}
}
