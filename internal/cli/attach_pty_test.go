package cli

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/creack/pty"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/admin"
)

// attachExec serves attaches: stdin echoes back; it records the start
// and whether the CLI's leaving closed the stream (the CP's detach).
type attachExec struct {
	echoExec
	start  atomic.Pointer[adminv1.ExecStart]
	closed atomic.Bool
}

func (e *attachExec) Exec(ctx context.Context, _ string, s *adminv1.ExecStart) (admin.ExecStream, error) {
	e.start.Store(s)
	return &closeRec{echoStream: echoStream{e: &e.echoExec}, closed: &e.closed, ctx: ctx}, nil
}

// closeRec ends with the admin stream's context, as the Dialer's handle
// does, and records the Close that follows.
type closeRec struct {
	echoStream
	closed *atomic.Bool
	ctx    context.Context
}

func (c *closeRec) Recv() ([]byte, bool, int32, error) {
	select {
	case b := <-c.e.in:
		return append([]byte("got:"), b...), false, 0, nil
	case <-c.ctx.Done():
		return nil, false, -1, c.ctx.Err()
	}
}

func (c *closeRec) Close() error { c.closed.Store(true); return nil }

// TestAttachDetachKeysOnAPty: clawker attach on a real pty forwards keys
// until the detach sequence, which it does not forward: it exits 0, says
// it detached, closes the stream (the CP detaches) and restores the
// terminal. A partial sequence is passed on.
func TestAttachDetachKeysOnAPty(t *testing.T) {
	home := initHome(t)
	ex := &attachExec{echoExec: echoExec{in: make(chan []byte, 16)}}
	t.Setenv(EnvCPAdminAddr, serveAdminTrust(t, home, strings.Repeat("ba", 32), ex, false))
	master, slave, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer master.Close()
	defer slave.Close()
	var errb bytes.Buffer
	a := &app{in: slave, out: slave, errOut: &errb, now: time.Now,
		newDocker: func() (dockerAPI, error) { return nil, errors.New("no docker") }}
	done := make(chan int, 1)
	go func() {
		done <- a.run(context.Background(), []string{"--home", home, "attach", "-p", "web", "--detach-keys", "ctrl-x,y", "dev"})
	}()
	scr := readScreen(master)
	waitCond(t, "attach started", func() bool {
		select {
		case code := <-done:
			t.Fatalf("attach ended before it started: exit %d, stderr %q", code, errb.String())
		default:
		}
		return ex.start.Load() != nil
	})
	if _, err := master.Write([]byte("a\x18b")); err != nil { // ctrl-x then not y: passed on
		t.Fatal(err)
	}
	waitCond(t, "keys echoed", func() bool { return strings.Contains(scr.String(), "got:a\x18b") })
	if s := ex.start.Load(); !s.GetAttach() || !s.GetTty() || len(s.GetArgv()) != 0 {
		t.Fatalf("attach start %v", s)
	}
	if _, err := master.Write([]byte("\x18y")); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 || !strings.Contains(errb.String(), "detached from") {
			t.Fatalf("detach: exit %d stderr %q", code, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the detach sequence did not end attach")
	}
	deadline := time.Now().Add(10 * time.Second)
	for !ex.closed.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the CP's stream was not closed on detach")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case b := <-ex.in:
		t.Fatalf("the detach sequence was forwarded: %q", b)
	default:
	}
}
