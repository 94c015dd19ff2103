package clawkerd

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"strings"
	"testing"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

func stdinCmd(id, data string) *clawkerdv1.Command {
	return &clawkerdv1.Command{CommandId: id, Payload: &clawkerdv1.Command_Stdin{Stdin: &clawkerdv1.Stdin{Data: []byte(data)}}}
}

func resizeCmd(id string, rows, cols uint32) *clawkerdv1.Command {
	return &clawkerdv1.Command{CommandId: id, Payload: &clawkerdv1.Command_Resize{Resize: &clawkerdv1.Resize{Rows: rows, Cols: cols}}}
}

// TestTTYCommandHasTerminal: the command's stdio is a terminal of the
// requested size, with TERM set, as its controlling terminal.
func TestTTYCommandHasTerminal(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	if !clawkerdv1.HasCapability(c.hello(), clawkerdv1.CapTTY) {
		t.Fatal("clawkerd must announce tty/v1")
	}
	res := c.run("t", &clawkerdv1.ShellCommand{
		Stages: []*clawkerdv1.PipeStage{stage("sh", "-c", `tty; stty size; echo "term=$TERM"; test -t 2 && echo err-tty; ps -o tty= -p $$ >/dev/null && exit 7`)},
		Tty:    &clawkerdv1.Tty{Rows: 33, Cols: 101, Term: "xterm-clawker"}, OutputWindow: 1 << 20})
	out := string(res.output)
	for _, want := range []string{"/dev/pts/", "33 101", "term=xterm-clawker", "err-tty"} {
		if !strings.Contains(out, want) {
			t.Fatalf("tty output lacks %q: %q", want, out)
		}
	}
	if res.done == nil || res.done.GetFinalExitCode() != 7 {
		t.Fatalf("want exit 7 (the terminal is its controlling tty), got %+v (%q)", res, out)
	}
}

// TestTTYInteractiveResize: typed input reaches a shell on the terminal,
// Resize changes the size it sees, and the exit code passes through.
func TestTTYInteractiveResize(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	c.send(shell("sh", &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{stage("sh")},
		Tty: &clawkerdv1.Tty{Rows: 24, Cols: 80}, OutputWindow: 1 << 20}))
	if r := c.next("sh"); r.GetStarted() == nil {
		t.Fatalf("want Started, got %v", r)
	}
	var got []byte
	expect := func(want string) {
		t.Helper()
		for !strings.Contains(string(got), want) {
			r := c.next("sh")
			if r.GetOutput() == nil {
				t.Fatalf("want output containing %q, got %v after %q", want, r, got)
			}
			got = append(got, r.GetOutput().GetData()...)
		}
		got = nil
	}
	c.send(stdinCmd("sh", "echo $((6*7))-x\n"))
	expect("42-x")
	c.send(resizeCmd("sh", 50, 132))
	c.send(stdinCmd("sh", "stty size | tr ' ' x\n"))
	expect("50x132")
	c.send(resizeCmd("sh", 0, 10)) // ignored: no zero-size terminal
	c.send(stdinCmd("sh", "stty size | tr ' ' y\n"))
	expect("50y132")
	c.send(stdinCmd("sh", "exit 5\n"))
	res := c.collect("sh")
	if res.done == nil || res.done.GetFinalExitCode() != 5 {
		t.Fatalf("want exit 5, got %+v", res)
	}
	c.send(resizeCmd("sh", 10, 10)) // finished recently: ignored silently
	c.send(resizeCmd("nope", 10, 10))
	if r := c.next("nope"); r.GetError().GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_UNKNOWN_COMMAND_ID {
		t.Fatalf("resize of an unknown id: want UNKNOWN_COMMAND_ID, got %v", r)
	}
	c.noMore("sh")
}

// TestTTYSignalReachesJob: Signal goes to the terminal's process group
// (Ctrl-C semantics without -i).
func TestTTYSignalReachesJob(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	c.send(shell("s", &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{stage("sh", "-c", "echo ready; sleep 60 & wait")},
		Tty: &clawkerdv1.Tty{}}))
	for r := c.next("s"); !strings.Contains(string(r.GetOutput().GetData()), "ready"); r = c.next("s") {
	}
	c.send(&clawkerdv1.Command{CommandId: "s", Payload: &clawkerdv1.Command_Signal{Signal: &clawkerdv1.Signal{Signo: 2}}})
	res := c.collect("s")
	if res.done == nil || res.done.GetFinalExitCode() != 130 {
		t.Fatalf("want 130 (SIGINT), got %+v", res)
	}
}

func TestTTYRequiresOneStage(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	res := c.run("two", &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{stage("true"), stage("true")}, Tty: &clawkerdv1.Tty{}})
	if res.err.GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_INVALID_REQUEST {
		t.Fatalf("want INVALID_REQUEST, got %+v", res)
	}
}

// TestSeparateStderr: stderr of every stage comes apart from the last
// stdout, byte for byte, under one output window shared by both readers.
func TestSeparateStderr(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	res := c.run("s", &clawkerdv1.ShellCommand{SeparateStderr: true, Stages: []*clawkerdv1.PipeStage{
		stage("sh", "-c", "echo first-err >&2; echo piped"), stage("sh", "-c", "cat; echo last-err >&2; exit 3")}})
	if trimLines(res.output) != "piped" || !strings.Contains(string(res.stderr), "first-err") || !strings.Contains(string(res.stderr), "last-err") {
		t.Fatalf("stdout %q stderr %q", res.output, res.stderr)
	}
	if res.done.GetFinalExitCode() != 3 {
		t.Fatalf("want exit 3, got %+v", res)
	}

	// Bulk binary on both streams with a small window: the CP-side credit
	// (granted here as output arrives) keeps both moving, nothing lost.
	blob := make([]byte, 3<<20)
	_, _ = rand.Read(blob)
	const window = 256 << 10
	c.send(shell("bulk", &clawkerdv1.ShellCommand{SeparateStderr: true, OutputWindow: window, InitialStdin: blob,
		Stages: []*clawkerdv1.PipeStage{stage("sh", "-c", "f=$(mktemp); cat > $f; cat $f >&2 & cat $f; wait; rm $f")}}))
	c.send(&clawkerdv1.Command{CommandId: "bulk", Payload: &clawkerdv1.Command_CloseStdin{CloseStdin: &clawkerdv1.CloseStdin{}}})
	var out, errb []byte
	for {
		r := c.next("bulk")
		if o := r.GetOutput(); o != nil {
			if o.GetStderr() {
				errb = append(errb, o.GetData()...)
			} else {
				out = append(out, o.GetData()...)
			}
			c.send(&clawkerdv1.Command{CommandId: "bulk", Payload: &clawkerdv1.Command_OutputCredit{
				OutputCredit: &clawkerdv1.OutputCredit{Bytes: uint64(len(o.GetData()))}}})
			continue
		}
		if r.GetDone() != nil || r.GetError() != nil {
			if r.GetDone().GetFinalExitCode() != 0 || r.GetError() != nil {
				t.Fatalf("bulk: %v", r)
			}
			break
		}
	}
	if !bytes.Equal(out, blob) || !bytes.Equal(errb, blob) {
		t.Fatalf("bulk: stdout %d bytes (sha %x), stderr %d bytes (sha %x), want %d (sha %x)",
			len(out), sha256.Sum256(out), len(errb), sha256.Sum256(errb), len(blob), sha256.Sum256(blob))
	}
}

// TestSeparateStderrIdleStdout: stdout finishes early and its reader sits
// in Read (the shell still holds the pipe) while stderr still streams;
// stderr must not starve for credit. The credit here is granted as a CP
// does, half a window at a time.
func TestSeparateStderrIdleStdout(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	const window = 128 << 10
	c.send(shell("idle", &clawkerdv1.ShellCommand{SeparateStderr: true, OutputWindow: window,
		Stages: []*clawkerdv1.PipeStage{stage("sh", "-c", "head -c 300000 /dev/zero; head -c 2000000 /dev/zero >&2")}}))
	var out, errb, consumed int
	for {
		r := c.next("idle")
		if o := r.GetOutput(); o != nil {
			if o.GetStderr() {
				errb += len(o.GetData())
			} else {
				out += len(o.GetData())
			}
			if consumed += len(o.GetData()); consumed >= window/2 {
				c.send(&clawkerdv1.Command{CommandId: "idle", Payload: &clawkerdv1.Command_OutputCredit{
					OutputCredit: &clawkerdv1.OutputCredit{Bytes: uint64(consumed)}}})
				consumed = 0
			}
			continue
		}
		if r.GetDone() != nil || r.GetError() != nil {
			break
		}
	}
	if out != 300000 || errb != 2000000 {
		t.Fatalf("stdout %d stderr %d", out, errb)
	}
}
