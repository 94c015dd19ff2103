package clawkerd

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

func TestPipelines(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	cases := []struct {
		name string
		sc   *clawkerdv1.ShellCommand
		want string
		code int32
	}{
		{"one", stages(stage("echo", "hello")), "hello", 0},
		{"two", stages(stage("printf", "b\\na\\nc\\n"), stage("sort")), "a\nb\nc", 0},
		{"three", stages(stage("seq", "1", "100"), stage("grep", "7"), stage("wc", "-l")), "19", 0},
		{"last-stage-code", stages(stage("echo", "x"), stage("sh", "-c", "cat >/dev/null; exit 3")), "", 3},
		{"first-fails-last-wins", stages(stage("false"), stage("cat")), "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := c.run(tc.name, tc.sc)
			if res.err != nil || res.done == nil {
				t.Fatalf("want Done, got %+v", res.err)
			}
			if !res.started || res.order[0] != "started" {
				t.Fatalf("Started must come first: %v", res.order)
			}
			if got := trimLines(res.output); got != tc.want {
				t.Fatalf("output %q, want %q", got, tc.want)
			}
			if res.done.GetFinalExitCode() != tc.code {
				t.Fatalf("final code %d, want %d", res.done.GetFinalExitCode(), tc.code)
			}
			if len(res.stages) != len(tc.sc.GetStages()) {
				t.Fatalf("got %d StageExit, want %d", len(res.stages), len(tc.sc.GetStages()))
			}
		})
	}
	// StageExit carries each stage's own code.
	res := c.run("codes", stages(stage("sh", "-c", "exit 5"), stage("sh", "-c", "cat; exit 0")))
	if res.stages[0].GetExitCode() != 5 || res.stages[1].GetExitCode() != 0 {
		t.Fatalf("stage codes %v", res.stages)
	}
}

func TestOutputMergesStderrOfEveryStage(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	res := c.run("m", stages(
		stage("sh", "-c", "echo e0 >&2; echo piped"),
		stage("sh", "-c", "cat; echo e1 >&2"),
	))
	out := string(res.output)
	for _, want := range []string{"e0", "piped", "e1"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output %q lacks %q", out, want)
		}
	}
	// Write order within one stage is kept.
	res = c.run("order", stages(stage("sh", "-c", "echo 1; echo 2 >&2; echo 3; echo 4 >&2")))
	if got := trimLines(res.output); got != "1\n2\n3\n4" {
		t.Fatalf("order %q", got)
	}
}

func TestStageEnvCwdOverlay(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	t.Setenv("CLAWKERD_TEST_BASE", "base")
	st := stage("sh", "-c", `echo "$CLAWKERD_TEST_BASE $FOO"; pwd`)
	st.Env = map[string]string{"FOO": "bar"}
	res := c.run("env", stages(st))
	if got := trimLines(res.output); got != "base bar\n/" {
		t.Fatalf("got %q", got)
	}
	dir := t.TempDir()
	st = stage("pwd")
	st.Cwd = dir
	if got := trimLines(c.run("cwd", stages(st)).output); got != dir {
		t.Fatalf("cwd %q want %q", got, dir)
	}
	// A stage PATH override is honoured for argv[0] lookup.
	bin := t.TempDir()
	if err := os.WriteFile(bin+"/only-here", []byte("#!/bin/sh\necho found\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	st = stage("only-here")
	st.Env = map[string]string{"PATH": bin + ":/usr/bin:/bin"}
	if got := trimLines(c.run("path", stages(st)).output); got != "found" {
		t.Fatalf("PATH lookup got %q", got)
	}
}

func TestLargeOutputBoundedMemory(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	const size = 64 << 20
	runtime.GC()
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	c.send(shell("big", stages(stage("head", "-c", strconv.Itoa(size), "/dev/zero"))))
	var total int
	for done := false; !done; {
		r := c.next("big")
		switch p := r.GetPayload().(type) {
		case *clawkerdv1.Response_Output:
			if len(p.Output.GetData()) > outputChunkMax {
				t.Fatalf("chunk of %d bytes exceeds %d", len(p.Output.GetData()), outputChunkMax)
			}
			total += len(p.Output.GetData()) // discarded: the test holds no copy
		case *clawkerdv1.Response_Done:
			done = true
		case *clawkerdv1.Response_Error:
			t.Fatalf("error %v", p.Error)
		}
	}
	close(stop)
	wg.Wait()
	if total != size {
		t.Fatalf("got %d bytes, want %d", total, size)
	}
	// Client and server share this heap; buffering the output anywhere
	// would need > 64 MiB.
	if p := peak.Load(); p > 48<<20 {
		t.Fatalf("peak heap in use %d MiB while streaming 64 MiB", p>>20)
	}
	t.Logf("peak heap in use: %.1f MiB", float64(peak.Load())/(1<<20))
}

func TestStdinStreaming(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	c.send(shell("cat", &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{stage("cat")}, InitialStdin: []byte("first\n")}))
	if r := c.next("cat"); r.GetStarted() == nil {
		t.Fatalf("want Started, got %v", r)
	}
	// Each line comes back before the next is sent: stdin is streamed,
	// not buffered until CloseStdin.
	var got []byte
	expect := func(want string) {
		for !strings.HasSuffix(string(got), want) {
			r := c.next("cat")
			if r.GetOutput() == nil {
				t.Fatalf("want output, got %v", r)
			}
			got = append(got, r.GetOutput().GetData()...)
		}
	}
	expect("first\n")
	for i := 0; i < 3; i++ {
		line := fmt.Sprintf("line %d\n", i)
		c.send(&clawkerdv1.Command{CommandId: "cat", Payload: &clawkerdv1.Command_Stdin{Stdin: &clawkerdv1.Stdin{Data: []byte(line)}}})
		expect(line)
	}
	c.send(&clawkerdv1.Command{CommandId: "cat", Payload: &clawkerdv1.Command_CloseStdin{CloseStdin: &clawkerdv1.CloseStdin{}}})
	res := c.collect("cat")
	if res.done == nil || res.done.GetFinalExitCode() != 0 {
		t.Fatalf("cat must end on CloseStdin with 0: %+v", res)
	}
	// Stdin reaches the first stage of a pipeline.
	c.send(shell("pipe", &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{stage("cat"), stage("tr", "a-z", "A-Z")}, InitialStdin: []byte("abc")}))
	c.send(&clawkerdv1.Command{CommandId: "pipe", Payload: &clawkerdv1.Command_CloseStdin{CloseStdin: &clawkerdv1.CloseStdin{}}})
	res = c.collect("pipe")
	if trimLines(res.output) != "ABC" {
		t.Fatalf("got %q", res.output)
	}
}

func TestTimeoutKillsEveryStage(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	res := c.run("t", &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{stage("sleep", "60"), stage("sleep", "60")}, TimeoutSeconds: 1})
	if res.err == nil || res.err.GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_TIMEOUT {
		t.Fatalf("want TIMEOUT, got done=%v err=%v", res.done, res.err)
	}
	for i := uint32(0); i < 2; i++ {
		se := res.stages[i]
		if se == nil || se.GetExitCode() != -1 || se.GetSigno() != int32(syscall.SIGKILL) {
			t.Fatalf("stage %d: want SIGKILL StageExit, got %v", i, se)
		}
	}
	c.noMore("t")
}

func TestSignalReachesEveryStage(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	c.send(shell("s", stages(stage("sleep", "60"), stage("sleep", "60"), stage("sleep", "60"))))
	if r := c.next("s"); r.GetStarted() == nil {
		t.Fatalf("want Started, got %v", r)
	}
	c.send(&clawkerdv1.Command{CommandId: "s", Payload: &clawkerdv1.Command_Signal{Signal: &clawkerdv1.Signal{Signo: int32(syscall.SIGTERM)}}})
	res := c.collect("s")
	if res.done == nil || res.done.GetFinalExitCode() != 128+int32(syscall.SIGTERM) {
		t.Fatalf("want Done{143}, got done=%v err=%v", res.done, res.err)
	}
	for i := uint32(0); i < 3; i++ {
		if se := res.stages[i]; se.GetSigno() != int32(syscall.SIGTERM) || se.GetExitCode() != -1 {
			t.Fatalf("stage %d: %v", i, se)
		}
	}
	// A bad signal number on a live command is refused.
	c.send(shell("s2", stages(stage("sleep", "60"))))
	c.next("s2")
	c.send(&clawkerdv1.Command{CommandId: "s2", Payload: &clawkerdv1.Command_Signal{Signal: &clawkerdv1.Signal{Signo: 0}}})
	if r := c.next("s2"); r.GetError().GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_INVALID_REQUEST {
		t.Fatalf("want INVALID_REQUEST, got %v", r)
	}
	c.send(&clawkerdv1.Command{CommandId: "s2", Payload: &clawkerdv1.Command_Signal{Signal: &clawkerdv1.Signal{Signo: 9}}})
	if res := c.collect("s2"); res.done.GetFinalExitCode() != 137 {
		t.Fatalf("want 137, got %v", res.done)
	}
}

func TestConcurrentCommands(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	const n = 32
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("c%d", i)
			// Interleaved lifetimes: later ids finish sooner.
			script := fmt.Sprintf("sleep 0.%02d; echo %s; exit %d", (n-i)*2, id, i%5)
			res := c.run(id, stages(stage("sh", "-c", script)))
			if res.done == nil || trimLines(res.output) != id || res.done.GetFinalExitCode() != int32(i%5) {
				t.Errorf("%s: output %q done %v err %v", id, res.output, res.done, res.err)
			}
		}()
	}
	wg.Wait()
}

func TestPrivilegeDrop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to drop privileges")
	}
	ts := startServer(t, nil)
	c := ts.session(t)
	st := stage("sh", "-c", "id -u; id -g; id -G")
	st.Uid, st.Gid = 65534, 65533
	res := c.run("drop", stages(st))
	if got := trimLines(res.output); got != "65534\n65533\n65533" {
		t.Fatalf("dropped ids %q", got)
	}
	// uid/gid 0/0 means root, no drop.
	if got := trimLines(c.run("root", stages(stage("id", "-u"))).output); got != "0" {
		t.Fatalf("root stage ran as %q", got)
	}
	// The unprivileged stage really is unprivileged.
	st = stage("sh", "-c", "cat /proc/1/environ >/dev/null 2>&1 || echo denied; touch /root/clawkerd-drop-test 2>/dev/null || echo denied2")
	st.Uid, st.Gid = 65534, 65534
	if got := trimLines(c.run("deny", stages(st)).output); !strings.Contains(got, "denied2") {
		t.Fatalf("uid 65534 could write /root: %q", got)
	}
}

func TestRequestValidationAndIDs(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	expectErr := func(id string, code clawkerdv1.ErrorCode) {
		t.Helper()
		r := c.next(id)
		if r.GetError().GetCode() != code {
			t.Fatalf("%s: want %v, got %v", id, code, r)
		}
	}
	c.send(shell("empty", stages()))
	expectErr("empty", clawkerdv1.ErrorCode_ERROR_CODE_INVALID_REQUEST)
	c.send(shell("emptyargv", stages(stage("echo"), &clawkerdv1.PipeStage{})))
	expectErr("emptyargv", clawkerdv1.ErrorCode_ERROR_CODE_INVALID_REQUEST)
	c.send(shell("", stages(stage("true"))))
	expectErr("", clawkerdv1.ErrorCode_ERROR_CODE_INVALID_REQUEST)
	c.send(&clawkerdv1.Command{CommandId: "nopayload"})
	expectErr("nopayload", clawkerdv1.ErrorCode_ERROR_CODE_INVALID_REQUEST)

	// Spawn failure: no Started, one SPAWN_FAILED, nothing after.
	c.send(shell("nobin", stages(stage("/nonexistent/binary"))))
	expectErr("nobin", clawkerdv1.ErrorCode_ERROR_CODE_SPAWN_FAILED)
	c.noMore("nobin")
	// A later stage failing to spawn kills the started ones.
	st := stage("sleep", "60")
	bad := stage("true")
	bad.Cwd = "/nonexistent-dir"
	c.send(shell("midfail", stages(st, bad)))
	expectErr("midfail", clawkerdv1.ErrorCode_ERROR_CODE_SPAWN_FAILED)

	// Duplicate live id.
	c.send(shell("dup", stages(stage("sleep", "60"))))
	if r := c.next("dup"); r.GetStarted() == nil {
		t.Fatalf("want Started, got %v", r)
	}
	c.send(shell("dup", stages(stage("echo", "second"))))
	expectErr("dup", clawkerdv1.ErrorCode_ERROR_CODE_INVALID_REQUEST)
	c.send(&clawkerdv1.Command{CommandId: "dup", Payload: &clawkerdv1.Command_Signal{Signal: &clawkerdv1.Signal{Signo: 9}}})
	res := c.collect("dup")
	if res.done == nil || res.done.GetFinalExitCode() != 137 || strings.Contains(string(res.output), "second") {
		t.Fatalf("original dup command: %+v", res)
	}
	// Once finished, the id may be reused.
	if res := c.run("dup", stages(stage("echo", "again"))); trimLines(res.output) != "again" {
		t.Fatalf("reuse: %q", res.output)
	}

	// Unknown ids for Stdin / CloseStdin / Signal.
	for _, cmd := range []*clawkerdv1.Command{
		{CommandId: "ghost1", Payload: &clawkerdv1.Command_Stdin{Stdin: &clawkerdv1.Stdin{Data: []byte("x")}}},
		{CommandId: "ghost2", Payload: &clawkerdv1.Command_CloseStdin{CloseStdin: &clawkerdv1.CloseStdin{}}},
		{CommandId: "ghost3", Payload: &clawkerdv1.Command_Signal{Signal: &clawkerdv1.Signal{Signo: 15}}},
	} {
		c.send(cmd)
		expectErr(cmd.GetCommandId(), clawkerdv1.ErrorCode_ERROR_CODE_UNKNOWN_COMMAND_ID)
	}
}

func TestPrintOutputEchoesToConsole(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	res := c.run("p", &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{stage("echo", "to-console")}, PrintOutput: true})
	if trimLines(res.output) != "to-console" || !strings.Contains(ts.console.String(), "to-console") {
		t.Fatalf("console %q output %q", ts.console.String(), res.output)
	}
	c.run("q", stages(stage("echo", "quiet")))
	if strings.Contains(ts.console.String(), "quiet") {
		t.Fatal("output without print_output reached the console")
	}
}
