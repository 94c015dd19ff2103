package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/admin"
)

// echoExec is a remote terminal: stdin comes back as output (tagged), a
// 'q' ends it with exit 9; resizes are recorded.
type echoExec struct {
	mu      sync.Mutex
	resized [][2]uint32
	in      chan []byte
}

func (e *echoExec) Exec(context.Context, string, *adminv1.ExecStart) (admin.ExecStream, error) {
	return &echoStream{e: e}, nil
}

type echoStream struct{ e *echoExec }

func (s *echoStream) Recv() ([]byte, bool, int32, error) {
	b := <-s.e.in
	if bytes.Contains(b, []byte("q")) {
		return nil, false, 9, io.EOF
	}
	return append([]byte("got:"), b...), false, 0, nil
}
func (s *echoStream) Stdin(b []byte) error { s.e.in <- append([]byte(nil), b...); return nil }
func (s *echoStream) Resize(r, c uint32) error {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	s.e.resized = append(s.e.resized, [2]uint32{r, c})
	return nil
}
func (*echoStream) CloseStdin() error  { return nil }
func (*echoStream) Signal(int32) error { return nil }
func (*echoStream) Close() error       { return nil }

// TestExecITOnAPty: clawker exec -it on a real pty: keys reach the
// command raw (Ctrl-C is a byte, not a signal), a window resize is
// forwarded, the exit code passes, and the terminal is restored.
func TestExecITOnAPty(t *testing.T) {
	home := initHome(t)
	ex := &echoExec{in: make(chan []byte, 16)}
	t.Setenv(EnvCPAdminAddr, serveAdminWith(t, home, strings.Repeat("ab", 32), ex))
	master, slave, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer master.Close()
	defer slave.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(pty.Setsize(master, &pty.Winsize{Rows: 20, Cols: 70}))
	before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	must(err)
	var errb bytes.Buffer
	a := &app{in: slave, out: slave, errOut: &errb, now: time.Now,
		newDocker: func() (dockerAPI, error) { return nil, errors.New("no docker") }}
	done := make(chan int, 1)
	go func() {
		done <- a.run(context.Background(), []string{"--home", home, "exec", "-it", "--allow-untrusted", "-p", "web", "dev", "--", "sh"})
	}()
	scr := readScreen(master)
	readUntil := func(text string) {
		t.Helper()
		waitCond(t, "terminal shows "+text, func() bool { return strings.Contains(scr.String(), text) })
	}
	// Raw mode: Ctrl-C and the keys arrive as typed, no local echo
	// ("got:" is the remote side's answer).
	deadline := time.Now().Add(20 * time.Second)
	for {
		tio, _ := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
		if tio.Lflag&unix.ICANON == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("terminal never went raw")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, err = master.Write([]byte("x\x03"))
	must(err)
	readUntil("got:x\x03")
	must(pty.Setsize(master, &pty.Winsize{Rows: 41, Cols: 101}))
	must(syscall.Kill(syscall.Getpid(), syscall.SIGWINCH))
	deadline = time.Now().Add(20 * time.Second)
	for {
		ex.mu.Lock()
		n := len(ex.resized)
		var last [2]uint32
		if n > 0 {
			last = ex.resized[n-1]
		}
		ex.mu.Unlock()
		if last == [2]uint32{41, 101} {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("resize not forwarded: %v", ex.resized)
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, err = master.Write([]byte("q"))
	must(err)
	select {
	case code := <-done:
		if code != 9 {
			t.Fatalf("exit %d, want 9; stderr %q", code, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("exec -it did not end")
	}
	after, _ := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if after.Lflag != before.Lflag || after.Iflag != before.Iflag || after.Oflag != before.Oflag {
		t.Fatalf("terminal not restored: before %+v after %+v", before, after)
	}
}

// ptyScreen collects what a pty master reads, on a goroutine of its own
// (a pty master's reads block; deadlines do not apply to it).
type ptyScreen struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (p *ptyScreen) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.String()
}

func readScreen(master io.Reader) *ptyScreen {
	p := &ptyScreen{}
	go func() {
		b := make([]byte, 1024)
		for {
			n, err := master.Read(b)
			p.mu.Lock()
			p.buf.Write(b[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return p
}

// waitCond polls cond for up to 20 s.
func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
