package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/term"
)

// ttySession is a terminal program (clawker or docker) on a pty the bench
// owns: the bench is the keyboard and the screen.
type ttySession struct {
	cmd     *exec.Cmd
	ptmx    *os.File
	out     chan []byte // output chunks, in order; closed at EOF
	seen    []byte      // output since the last reset
	started time.Time
	exited  chan error
}

// ttyWait bounds every wait on the far side of a terminal.
const ttyWait = 30 * time.Second

// startTTY starts cmd on a new 24×120 pty whose slave side is raw from
// the start, so no local echo can pass for the remote one.
func startTTY(cmd *exec.Cmd) (*ttySession, error) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		return nil, err
	}
	defer tty.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 24, Cols: 120}); err != nil {
		ptmx.Close()
		return nil, err
	}
	if _, err := term.MakeRaw(int(tty.Fd())); err != nil {
		ptmx.Close()
		return nil, fmt.Errorf("raw pty: %w", err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	s := &ttySession{cmd: cmd, ptmx: ptmx, out: make(chan []byte, 64), exited: make(chan error, 1)}
	s.started = time.Now()
	if err := cmd.Start(); err != nil {
		ptmx.Close()
		return nil, fmt.Errorf("%s: %w", cmd.Args, err)
	}
	go func() { s.exited <- cmd.Wait() }()
	go func() {
		defer close(s.out)
		for {
			buf := make([]byte, 4096)
			n, err := ptmx.Read(buf)
			if n > 0 {
				s.out <- buf[:n]
			}
			if err != nil {
				return
			}
		}
	}()
	return s, nil
}

var errTTYClosed = errors.New("terminal closed")

// next waits for the next chunk of output and adds it to seen.
func (s *ttySession) next(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case b, ok := <-s.out:
		if !ok {
			return errTTYClosed
		}
		s.seen = append(s.seen, b...)
		return nil
	case <-t.C:
		return fmt.Errorf("no output in %s (so far %q)", timeout, tail(s.seen))
	}
}

// until reads output until cond holds for what was seen.
func (s *ttySession) until(what string, cond func([]byte) bool) error {
	deadline := time.Now().Add(ttyWait)
	for !cond(s.seen) {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("%s: not seen in %s (so far %q)", what, ttyWait, tail(s.seen))
		}
		if err := s.next(left); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return nil
}

// firstByte is the time from the process start to its first output.
func (s *ttySession) firstByte() (time.Duration, error) {
	if err := s.next(ttyWait); err != nil {
		return 0, err
	}
	return time.Since(s.started), nil
}

// prompt waits for a shell prompt and returns it (the text after the
// last line break), to know when a later command line is done.
func (s *ttySession) prompt() ([]byte, error) {
	err := s.until("shell prompt", func(b []byte) bool {
		v := visible(b)
		t := bytes.TrimRight(v, " ")
		return len(t) < len(v) && len(t) > 0 && bytes.IndexByte([]byte("#$>"), t[len(t)-1]) >= 0
	})
	if err != nil {
		return nil, err
	}
	v := visible(s.seen)
	s.seen = nil
	return v[bytes.LastIndexAny(v, "\r\n")+1:], nil
}

// keystroke types b and returns the time until its echo came back: the
// screen's visible text ends with b (a late prompt redraw, which may hold
// b too, ends with the prompt).
func (s *ttySession) keystroke(b byte) (time.Duration, error) {
	s.seen = nil
	start := time.Now()
	if _, err := s.ptmx.Write([]byte{b}); err != nil {
		return 0, err
	}
	if err := s.until(fmt.Sprintf("echo of %q", b), func(seen []byte) bool { return bytes.HasSuffix(visible(seen), []byte{b}) }); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// line ends the typed line with Enter and waits for the prompt again.
func (s *ttySession) line(prompt []byte) error {
	s.seen = nil
	if _, err := s.ptmx.Write([]byte{'\r'}); err != nil {
		return err
	}
	return s.until("prompt after Enter", func(b []byte) bool { return bytes.HasSuffix(visible(b), prompt) })
}

// end types keys (e.g. "exit\r" or the detach sequence) and waits for the
// process to exit; on a timeout it is killed. The pty is closed after.
func (s *ttySession) end(keys string) error {
	defer s.ptmx.Close()
	_, werr := io.WriteString(s.ptmx, keys)
	t := time.NewTimer(ttyWait)
	defer t.Stop()
	// Drain output so the process never blocks on a full pty.
	go func() {
		for range s.out {
		}
	}()
	select {
	case err := <-s.exited:
		if werr != nil {
			return werr
		}
		return err
	case <-t.C:
		_ = s.cmd.Process.Kill()
		<-s.exited
		return fmt.Errorf("%s did not exit on %q", s.cmd.Args, keys)
	}
}

// visible drops terminal control sequences (ESC [ … final byte) from b:
// busybox ash follows its prompt with a cursor query (ESC [ 6 n), which
// the bench, like a terminal without that feature, leaves unanswered, and
// redraws the prompt after a resize with ESC [ J.
func visible(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == 0x1b && i+1 < len(b) && b[i+1] == '[' {
			j := i + 2
			for j < len(b) && (b[j] < 0x40 || b[j] > 0x7e) {
				j++
			}
			i = j
			continue
		}
		out = append(out, b[i])
	}
	return out
}

func tail(b []byte) []byte {
	if len(b) > 200 {
		return b[len(b)-200:]
	}
	return b
}
