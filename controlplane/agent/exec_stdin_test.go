package agent

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/testenv/oldclawkerd"
)

// stdinTestBytes is how much the credit test streams: 64 MiB by default
// (16 times clawkerd's 4 MiB backlog bound, which killed the command
// before stdin credit), CLAWKER_STDIN_BYTES to try more (e.g. 1 GiB).
func stdinTestBytes(t *testing.T) int {
	n := 64 << 20
	if v := os.Getenv("CLAWKER_STDIN_BYTES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			t.Fatalf("CLAWKER_STDIN_BYTES=%q", v)
		}
	}
	return n
}

func heapMiB() float64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / (1 << 20)
}

// A producer far faster than the command, through Dialer.Exec and the
// real clawkerd: Stdin waits for credit instead of overflowing clawkerd's
// backlog, so `wc -c` counts every byte and exits 0. The command reads
// nothing until the CP is seen blocked on credit, and clawkerd's backlog
// never exceeds the window.
func TestExecStdinCreditPacesProducer(t *testing.T) {
	total := stdinTestBytes(t)
	env := newDTEnv(t, nil)
	id := dtContainerID(t)
	_, _, srv := startRealClawkerdServer(t, env, id)
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	dtWait(t, "session ready", func() bool { s := env.dialer.Sessions(); return len(s) == 1 && s[0].Ready })

	gate := filepath.Join(t.TempDir(), "go")
	cmd := &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{Argv: []string{"/bin/sh", "-c",
		"while [ ! -e " + gate + " ]; do sleep 0.01; done; exec wc -c"}}}}
	h, err := env.dialer.Exec(context.Background(), id, cmd)
	if err != nil {
		t.Fatal(err)
	}
	if cmd.GetStdinWindow() != 0 {
		t.Fatal("Exec modified the caller's ShellCommand")
	}
	heapBefore := heapMiB()
	sent := make(chan error, 1)
	go func() {
		chunk := bytes.Repeat([]byte("y\n"), 16<<10) // 32 KiB, as the CLI reads
		var err error
		for n := 0; n < total && err == nil; n += len(chunk) {
			err = h.Stdin(chunk[:min(len(chunk), total-n)])
		}
		if err == nil {
			err = h.CloseStdin()
		}
		sent <- err
	}()
	waits := func() int { h.mu.Lock(); defer h.mu.Unlock(); return h.stdinWaits }
	dtWait(t, "stdin blocked on credit", func() bool { return waits() > 0 })
	if hi := srv.StdinBacklogHigh(); hi > ExecStdinWindow {
		t.Fatalf("clawkerd queued %d bytes of stdin, window %d", hi, ExecStdinWindow)
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out, done, exErr := drain(t, h)
	if err := <-sent; err != nil {
		t.Fatalf("stdin: %v", err)
	}
	if exErr != nil || done == nil || done.GetFinalExitCode() != 0 {
		t.Fatalf("exec ended with %v / %v (output %q)", exErr, done, out)
	}
	if got := strings.TrimSpace(out); got != strconv.Itoa(total) {
		t.Fatalf("wc -c counted %s, want %d", got, total)
	}
	hi := srv.StdinBacklogHigh()
	if hi > ExecStdinWindow {
		t.Fatalf("clawkerd queued up to %d bytes of stdin, window %d", hi, ExecStdinWindow)
	}
	t.Logf("%d MiB through wc -c: clawkerd stdin backlog high-water %d KiB (window %d KiB), stdin waited %d times, heap %.1f -> %.1f MiB",
		total>>20, hi>>10, ExecStdinWindow>>10, waits(), heapBefore, heapMiB())
}

// Against a clawkerd without stdin-credit/v1 no stdin_window goes on the
// wire (the base contract) and Stdin is not paced: small input still
// arrives.
func TestExecStdinOldPeerNoWindow(t *testing.T) {
	env := newDTEnv(t, nil)
	old := &oldclawkerd.Server{}
	id := serveOld(t, env, old)
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	dtWait(t, "session ready", func() bool { s := env.dialer.Sessions(); return len(s) == 1 && s[0].Ready })
	h, err := env.dialer.Exec(context.Background(), id, &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{
		Argv: []string{"wc", "-c"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Stdin(bytes.Repeat([]byte("z"), 1000)); err != nil {
		t.Fatal(err)
	}
	if err := h.CloseStdin(); err != nil {
		t.Fatal(err)
	}
	out, done, exErr := drain(t, h)
	if exErr != nil || done == nil || strings.TrimSpace(out) != "1000" {
		t.Fatalf("exec: %q %v %v", out, done, exErr)
	}
	shells := old.Shells()
	if w := shells[len(shells)-1].GetStdinWindow(); w != 0 {
		t.Fatalf("stdin_window %d sent to a peer without stdin-credit/v1", w)
	}
}
