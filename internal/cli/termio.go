package cli

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"
)

// localTerminal is the operator's terminal while a remote command runs on
// a pseudo-terminal (exec -t, run -t, attach): raw input, its size, and
// SIGWINCH. restore puts the terminal back; it is safe to call more than
// once, and callers defer it so every exit path restores.
type localTerminal struct {
	inFd, outFd int // -1: not a terminal
	saved       *term.State
}

// openLocalTerminal finds the terminal among in and out. With raw, a
// terminal stdin is put in raw mode, so keys (Ctrl-C included) go to the
// remote terminal as bytes, as docker does with -it.
func openLocalTerminal(in io.Reader, out io.Writer, raw bool) (*localTerminal, error) {
	lt := &localTerminal{inFd: termFd(in), outFd: termFd(out)}
	if raw && lt.inFd >= 0 {
		st, err := term.MakeRaw(lt.inFd)
		if err != nil {
			return nil, err
		}
		lt.saved = st
	}
	return lt, nil
}

func termFd(v any) int {
	if f, ok := v.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return int(f.Fd())
	}
	return -1
}

// size is the terminal's rows and columns; 0, 0 when unknown (the remote
// side then uses 24x80).
func (lt *localTerminal) size() (rows, cols uint32) {
	for _, fd := range []int{lt.outFd, lt.inFd} {
		if fd < 0 {
			continue
		}
		if w, h, err := term.GetSize(fd); err == nil && w > 0 && h > 0 {
			return uint32(h), uint32(w)
		}
	}
	return 0, 0
}

func (lt *localTerminal) restore() {
	if lt.saved != nil {
		_ = term.Restore(lt.inFd, lt.saved)
		lt.saved = nil
	}
}

// watchResize calls resize with the new size on every SIGWINCH until ctx
// ends.
func (lt *localTerminal) watchResize(ctx context.Context, resize func(rows, cols uint32)) {
	if lt.outFd < 0 && lt.inFd < 0 {
		return
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				if r, c := lt.size(); r > 0 {
					resize(r, c)
				}
			}
		}
	}()
}
