package clawkerd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"

	"github.com/clawker/clawker/internal/logger"
)

// attachQueueMax bounds the chunks an attached client may fall behind the
// user CMD's terminal; past it the client is dropped (its attach ends), so
// one slow client never stalls the terminal or the others.
const attachQueueMax = 1024

// userTerm is the user CMD's pseudo-terminal (CLAWKER_TTY=1). pump copies
// its output to the console (docker logs) and to every attached client.
type userTerm struct {
	master *os.File
	log    *logger.Logger

	mu     sync.Mutex
	subs   map[*termSub]struct{}
	closed bool
	// drained is closed once pump has read the terminal to its end (or
	// the terminal was closed unused): no output is left to fan out.
	drained chan struct{}
}

type termSub struct {
	ch   chan []byte
	w    *os.File
	once sync.Once
}

func (s *termSub) end() { s.once.Do(func() { close(s.ch) }) }

// openUserTerm gives cmd a new terminal as stdio and controlling tty. The
// caller closes the slave after the start.
func openUserTerm(cmd *exec.Cmd, log *logger.Logger) (*userTerm, *os.File, error) {
	master, slave, err := pty.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("user CMD terminal: %w", err)
	}
	if err := setSize(master, 0, 0); err != nil {
		_, _ = master.Close(), slave.Close()
		return nil, nil, fmt.Errorf("user CMD terminal size: %w", err)
	}
	if cred := cmd.SysProcAttr.Credential; cred != nil {
		if err := slave.Chown(int(cred.Uid), int(cred.Gid)); err != nil {
			_, _ = master.Close(), slave.Close()
			return nil, nil, fmt.Errorf("user CMD terminal owner: %w", err)
		}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr.Setpgid = false
	cmd.SysProcAttr.Setsid, cmd.SysProcAttr.Setctty, cmd.SysProcAttr.Ctty = true, true, 0
	return &userTerm{master: master, log: log, subs: map[*termSub]struct{}{}, drained: make(chan struct{})}, slave, nil
}

// pump reads the terminal until the user CMD and every holder of the
// slave are gone, then ends every attach.
func (t *userTerm) pump(console io.Writer) {
	defer recoverLog(t.log, "user_term_pump")
	defer t.close()
	buf := make([]byte, 32<<10)
	for {
		n, err := t.master.Read(buf)
		if n > 0 {
			_, _ = console.Write(buf[:n])
			t.fanOut(buf[:n])
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.EIO) {
				t.log.Warn().Str("event", "user_term_read_failed").Err(err).Msg("user CMD terminal read failed")
			}
			return
		}
	}
}

func (t *userTerm) fanOut(b []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for s := range t.subs {
		select {
		case s.ch <- append([]byte(nil), b...):
		default:
			delete(t.subs, s)
			s.end()
			t.log.Warn().Str("event", "attach_client_dropped").Int("queue_max", attachQueueMax).
				Msg("attached client fell behind the user CMD's terminal; its attach ended")
		}
	}
}

// subscribe returns a pipe that carries the terminal's output from now on
// and a function that ends it (the pipe then reads EOF).
func (t *userTerm) subscribe() (*os.File, func(), error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("attach pipe: %w", err)
	}
	s := &termSub{ch: make(chan []byte, attachQueueMax), w: w}
	t.mu.Lock()
	if t.closed {
		s.end()
	} else {
		t.subs[s] = struct{}{}
	}
	t.mu.Unlock()
	go func() {
		defer recoverLog(t.log, "attach_writer")
		defer func() { _ = w.Close() }()
		for b := range s.ch {
			if _, err := w.Write(b); err != nil {
				return
			}
		}
	}()
	return r, func() {
		t.mu.Lock()
		delete(t.subs, s)
		t.mu.Unlock()
		s.end()
	}, nil
}

// termDrainWait bounds how long an attach waits, after the user CMD's
// exit, for its last output: a process that inherited the terminal can
// keep it open (and pump reading) after the CMD itself is gone.
const termDrainWait = 2 * time.Second

// awaitDrained waits (bounded) until pump has fanned out the terminal's
// last bytes, so an attach ended by the CMD's exit does not lose them.
func (t *userTerm) awaitDrained() {
	timer := time.NewTimer(termDrainWait)
	defer timer.Stop()
	select {
	case <-t.drained:
	case <-timer.C:
	}
}

// close ends every attach; the master stays open for resize until exit.
func (t *userTerm) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		close(t.drained)
	}
	t.closed = true
	for s := range t.subs {
		delete(t.subs, s)
		s.end()
	}
}
