package clawkerd

import (
	"bytes"
	"strconv"
	"syscall"
	"testing"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

func creditFrame(id string, n uint64) *clawkerdv1.Command {
	return &clawkerdv1.Command{CommandId: id, Payload: &clawkerdv1.Command_OutputCredit{
		OutputCredit: &clawkerdv1.OutputCredit{Bytes: n}}}
}

// seqOutput is what `seq 1 n` prints.
func seqOutput(n int) []byte {
	var b bytes.Buffer
	for i := 1; i <= n; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// A real process writing ~31 MiB through a 256 KiB window: with no credit
// clawkerd stops after exactly the window (the writer blocks, memory is
// bounded) while the Session still serves other commands; credit granted
// in small steps then delivers every byte, in order, and the exit code.
func TestOutputWindowBackpressureDeliversEverything(t *testing.T) {
	const window = 256 << 10
	const lines = 4_000_000 // ~31 MiB of output
	want := seqOutput(lines)
	ts := startServer(t, nil)
	c := ts.session(t)
	sc := stages(stage("seq", "1", strconv.Itoa(lines)))
	sc.OutputWindow = window
	c.send(shell("big", sc))
	if r := c.next("big"); r.GetStarted() == nil {
		t.Fatalf("want Started, got %v", r)
	}

	var got []byte
	credited := 0
	recv := func() *clawkerdv1.Response {
		r := c.next("big")
		if d := r.GetOutput().GetData(); len(d) > 0 {
			got = append(got, d...)
			if out := len(got) - credited; out > window {
				t.Fatalf("%d bytes outstanding beyond the %d window", out, window)
			}
		}
		return r
	}
	// No credit yet: exactly one window arrives, then nothing more.
	for len(got) < window {
		recv()
	}
	c.noMore("big")
	if len(got) != window {
		t.Fatalf("got %d bytes without credit, want exactly the window %d", len(got), window)
	}
	// The stalled command holds nothing else up.
	if c.hello() == nil {
		t.Fatal("no HelloAck while a command is stalled on credit")
	}
	if res := c.run("other", stages(stage("echo", "served"))); res.done == nil || trimLines(res.output) != "served" {
		t.Fatalf("other command while stalled: %+v %q", res, res.output)
	}

	// Grant slowly: 16 KiB at a time, only once that much more arrived,
	// so clawkerd runs on a nearly empty window throughout.
	const step = 16 << 10
	var done *clawkerdv1.Done
	for done == nil {
		for len(got)-credited >= step {
			c.send(creditFrame("big", step))
			credited += step
		}
		if len(got)-credited > 0 && len(got)-credited < step {
			// top up what the window needs to make progress
			n := len(got) - credited
			c.send(creditFrame("big", uint64(n)))
			credited += n
		}
		r := recv()
		if e := r.GetError(); e != nil {
			t.Fatalf("command failed: %v", e)
		}
		done = r.GetDone()
	}
	if done.GetFinalExitCode() != 0 {
		t.Fatalf("exit code %d", done.GetFinalExitCode())
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("output differs: got %d bytes, want %d", len(got), len(want))
	}
	// A credit racing the Done is ignored silently; an unknown id is not.
	c.send(creditFrame("big", 1))
	c.noMore("big")
	c.send(creditFrame("never-ran", 1))
	if e := c.next("never-ran").GetError(); e.GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_UNKNOWN_COMMAND_ID {
		t.Fatalf("credit for an unknown id: want UNKNOWN_COMMAND_ID, got %v", e)
	}
}

// A command stalled on credit still ends on SIGKILL and on its timeout.
func TestOutputWindowStallEndsOnKillAndTimeout(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)

	sc := stages(stage("yes"))
	sc.OutputWindow = 4 << 10
	c.send(shell("killed", sc))
	n := 0
	for n < 4<<10 {
		n += len(c.next("killed").GetOutput().GetData())
	}
	c.send(&clawkerdv1.Command{CommandId: "killed", Payload: &clawkerdv1.Command_Signal{Signal: &clawkerdv1.Signal{Signo: int32(syscall.SIGKILL)}}})
	res := c.collect("killed")
	if res.done == nil || res.stages[0].GetSigno() != int32(syscall.SIGKILL) {
		t.Fatalf("stalled command must end by SIGKILL: %+v", res)
	}

	sc = stages(stage("yes"))
	sc.OutputWindow = 4 << 10
	sc.TimeoutSeconds = 1
	res = c.run("timeout", sc)
	if res.err.GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_TIMEOUT {
		t.Fatalf("stalled command must time out: %+v", res)
	}
	if len(res.output) != 4<<10 {
		t.Fatalf("timed-out command sent %d bytes, want the window %d", len(res.output), 4<<10)
	}
}

// A CP that half-closes the Session can grant no more credit: a command
// stalled on its window is killed rather than holding the Session open.
func TestOutputWindowStallEndsOnHalfClose(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	sc := stages(stage("yes"))
	sc.OutputWindow = 4 << 10
	c.send(shell("stalled", sc))
	n := 0
	for n < 4<<10 {
		n += len(c.next("stalled").GetOutput().GetData())
	}
	c.sendMu.Lock()
	err := c.stream.CloseSend()
	c.sendMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	res := c.collect("stalled")
	if res.done == nil || res.stages[0].GetSigno() != int32(syscall.SIGKILL) {
		t.Fatalf("stalled command after half-close: %+v", res)
	}
}
