package clawkerd

import (
	"bytes"
	"syscall"
	"testing"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

func stdinFrame(id string, data []byte) *clawkerdv1.Command {
	return &clawkerdv1.Command{CommandId: id, Payload: &clawkerdv1.Command_Stdin{Stdin: &clawkerdv1.Stdin{Data: data}}}
}

// A command that never reads stdin, flooded with far more Stdin frames
// than any pipe holds, must not stall the Session: Hello, a second command
// and a Signal for the stuck one are all served while it still runs.
func TestStdinFloodDoesNotStallSession(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	c.send(shell("stuck", stages(stage("sleep", "600"))))
	if r := c.next("stuck"); r.GetStarted() == nil {
		t.Fatalf("want Started, got %v", r)
	}
	// 48 frames of 64 KiB: 3 MiB, within stdinBufferMax, but well beyond
	// a pipe's capacity plus the old 16-frame queue.
	frame := bytes.Repeat([]byte("x"), 64<<10)
	for i := 0; i < 48; i++ {
		c.send(stdinFrame("stuck", frame))
	}
	if ack := c.hello(); ack == nil {
		t.Fatal("no HelloAck")
	}
	res := c.run("other", stages(stage("echo", "still served")))
	if res.done == nil || trimLines(res.output) != "still served" {
		t.Fatalf("second command: %+v output %q", res, res.output)
	}
	c.send(&clawkerdv1.Command{CommandId: "stuck", Payload: &clawkerdv1.Command_Signal{Signal: &clawkerdv1.Signal{Signo: int32(syscall.SIGTERM)}}})
	res = c.collect("stuck")
	if res.done == nil || res.stages[0].GetSigno() != int32(syscall.SIGTERM) {
		t.Fatalf("stuck command must end by the Signal: %+v", res)
	}
}

// A backlog beyond stdinBufferMax kills that command, which ends with
// IO_ERROR; the Session and its other commands carry on.
func TestStdinOverflowKillsOnlyThatCommand(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	c.send(shell("bystander", stages(stage("cat"))))
	if r := c.next("bystander"); r.GetStarted() == nil {
		t.Fatalf("want Started, got %v", r)
	}
	c.send(shell("stuck", stages(stage("sleep", "600"))))
	if r := c.next("stuck"); r.GetStarted() == nil {
		t.Fatalf("want Started, got %v", r)
	}
	frame := bytes.Repeat([]byte("y"), 256<<10-stdinFrameCost)
	// Exactly one frame past the bound: later frames would race the end
	// of the command and rightly draw UNKNOWN_COMMAND_ID.
	for i := 0; i < (stdinBufferMax/len(frame))+1; i++ {
		c.send(stdinFrame("stuck", frame))
	}
	res := c.collect("stuck")
	if res.err == nil || res.err.GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_IO_ERROR {
		t.Fatalf("overflowed command must end with IO_ERROR: %+v", res)
	}
	if res.stages[0].GetSigno() != int32(syscall.SIGKILL) {
		t.Fatalf("overflowed command must be SIGKILLed: %+v", res.stages[0])
	}
	c.noMore("stuck")
	// The bystander still streams stdin and finishes normally.
	c.send(stdinFrame("bystander", []byte("alive\n")))
	c.send(&clawkerdv1.Command{CommandId: "bystander", Payload: &clawkerdv1.Command_CloseStdin{CloseStdin: &clawkerdv1.CloseStdin{}}})
	res = c.collect("bystander")
	if res.done == nil || res.done.GetFinalExitCode() != 0 || trimLines(res.output) != "alive" {
		t.Fatalf("bystander: %+v output %q", res, res.output)
	}
	if c.hello() == nil {
		t.Fatal("no HelloAck after overflow")
	}
}
