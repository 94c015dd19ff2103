package cli

import (
	"bytes"
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// TestLocalTerminalRawRestoreResize: raw mode is set and fully undone,
// the size is the terminal's, and SIGWINCH reports the new size.
func TestLocalTerminalRawRestoreResize(t *testing.T) {
	master, slave, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer master.Close()
	defer slave.Close()
	if err := pty.Setsize(master, &pty.Winsize{Rows: 33, Cols: 77}); err != nil {
		t.Fatal(err)
	}
	before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	lt, err := openLocalTerminal(slave, slave, true)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if raw.Lflag&(unix.ECHO|unix.ICANON|unix.ISIG) != 0 {
		t.Fatalf("not raw: lflag %#x", raw.Lflag)
	}
	if r, c := lt.size(); r != 33 || c != 77 {
		t.Fatalf("size %dx%d, want 33x77", r, c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sizes := make(chan [2]uint32, 4)
	lt.watchResize(ctx, func(r, c uint32) { sizes <- [2]uint32{r, c} })
	if err := pty.Setsize(master, &pty.Winsize{Rows: 50, Cols: 140}); err != nil {
		t.Fatal(err)
	}
	// Our process is not the pty's foreground group: deliver the
	// SIGWINCH a terminal would.
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGWINCH); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-sizes:
		if got != [2]uint32{50, 140} {
			t.Fatalf("resize reported %v, want 50x140", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no resize after SIGWINCH")
	}
	lt.restore()
	lt.restore() // idempotent
	after, _ := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if after.Lflag != before.Lflag || after.Iflag != before.Iflag || after.Oflag != before.Oflag || !bytes.Equal(ccBytes(after), ccBytes(before)) {
		t.Fatalf("terminal not restored: before %+v after %+v", before, after)
	}

	// Not a terminal: nothing raw, no size, no error.
	lt, err = openLocalTerminal(&bytes.Buffer{}, &bytes.Buffer{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if r, c := lt.size(); r != 0 || c != 0 {
		t.Fatalf("size of a non-terminal: %dx%d", r, c)
	}
	lt.restore()
}

func ccBytes(t *unix.Termios) []byte { return append([]byte(nil), t.Cc[:]...) }
