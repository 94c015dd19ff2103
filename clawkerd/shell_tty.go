package clawkerd

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// Default terminal size when the CP sends none (what a VT100 has).
const (
	defaultTTYRows = 24
	defaultTTYCols = 80
)

// spawnTTY starts a tty command's only stage on a new pseudo-terminal: the
// slave is its stdin, stdout, stderr and controlling terminal (new
// session), the master is read for output and written with stdin through
// a dup, so CloseStdin does not close the terminal.
func (c *shellCmd) spawnTTY() (exits []<-chan exitStatus, outR, inW *os.File, err error) {
	st := c.spec.GetStages()[0]
	cmd, err := buildStageCmd(st, &c.sess.srv.cfg)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("stage 0: %w", err)
	}
	if term := c.spec.GetTty().GetTerm(); term != "" {
		if _, set := st.GetEnv()["TERM"]; !set {
			cmd.Env = overlayEnv(cmd.Env, map[string]string{"TERM": term})
		}
	}
	master, slave, err := pty.Open()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open pty: %w", err)
	}
	defer func() { _ = slave.Close() }() // the child holds its own copies
	fail := func(e error) ([]<-chan exitStatus, *os.File, *os.File, error) {
		_ = master.Close()
		if inW != nil {
			_ = inW.Close()
		}
		return nil, nil, nil, e
	}
	if err := setSize(master, c.spec.GetTty().GetRows(), c.spec.GetTty().GetCols()); err != nil {
		return fail(fmt.Errorf("pty size: %w", err))
	}
	if cred := cmd.SysProcAttr.Credential; cred != nil {
		// The user owns its terminal, as login does; programs that reopen
		// it by name (/proc/self/fd/0) would fail otherwise.
		if err := slave.Chown(int(cred.Uid), int(cred.Gid)); err != nil {
			return fail(fmt.Errorf("pty owner: %w", err))
		}
	}
	if inW, err = dupFile(master, "pty-stdin"); err != nil {
		return fail(err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	// A new session with the slave (the child's fd 0) as controlling
	// terminal; the session leader leads its process group too, so
	// signalLocked's kill(-pid) still reaches the whole job.
	cmd.SysProcAttr.Setpgid = false
	cmd.SysProcAttr.Setsid, cmd.SysProcAttr.Setctty, cmd.SysProcAttr.Ctty = true, true, 0
	pid, ch, err := c.sess.srv.procs.start(cmd)
	if err != nil {
		return fail(fmt.Errorf("stage 0: %w", err))
	}
	c.mu.Lock()
	c.pids, c.live, c.ptyMaster = append(c.pids, pid), append(c.live, true), master
	c.mu.Unlock()
	c.markSpawned()
	return []<-chan exitStatus{ch}, master, inW, nil
}

// dupFile returns a second *os.File on f's open file description.
func dupFile(f *os.File, name string) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("dup %s: %w", name, err)
	}
	fd := -1
	cerr := rc.Control(func(orig uintptr) { fd, err = unix.FcntlInt(orig, unix.F_DUPFD_CLOEXEC, 0) })
	if err = errors.Join(cerr, err); err != nil {
		return nil, fmt.Errorf("dup %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// setSize sets a terminal's window size; 0 means the default.
func setSize(master *os.File, rows, cols uint32) error {
	if rows == 0 {
		rows = defaultTTYRows
	}
	if cols == 0 {
		cols = defaultTTYCols
	}
	return pty.Setsize(master, &pty.Winsize{Rows: uint16(min(rows, 0xffff)), Cols: uint16(min(cols, 0xffff))})
}

// resize applies a Resize. It never blocks (the caller is the Session's
// recv loop); the kernel sends SIGWINCH to the foreground group. Ignored
// without a terminal, with a zero size, or once the command ended.
func (c *shellCmd) resize(r *clawkerdv1.Resize) {
	if r.GetRows() == 0 || r.GetCols() == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock() // held so the master cannot be closed meanwhile
	if c.ptyMaster == nil || c.ptyClosed {
		return
	}
	if err := setSize(c.ptyMaster, r.GetRows(), r.GetCols()); err != nil {
		c.sess.log.Debug().Str("event", "tty_resize_failed").Str("command_id", c.id).Err(err).Msg("resize failed")
	}
}

// closePTY stops resize from touching the master, which run closes next.
func (c *shellCmd) closePTY() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ptyClosed = true
}

// quietReadErr reports read errors that only mean the output ended: on
// Linux a master reads EIO once every slave fd is closed.
func quietReadErr(err error, tty bool) bool {
	return tty && errors.Is(err, syscall.EIO)
}
