package clawkerd

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/clawker/clawker/internal/logger"
)

// exitStatus is one reaped child's wait status.
type exitStatus struct {
	ws unix.WaitStatus
}

// code is the shell-style exit code: the exit status, or 128+n when the
// child was killed by signal n.
func (e exitStatus) code() int {
	if e.ws.Signaled() {
		return 128 + int(e.ws.Signal())
	}
	return e.ws.ExitStatus()
}

// procTable starts children and delivers each one's status to exactly one
// waiter. With reapAll it is the PID 1 reaper: one loop calls wait4(-1) on
// every SIGCHLD and hands the statuses of pids it started to their waiters,
// discarding (reaping) everything else, such as reparented orphans. Without
// it each child is waited for by pid, so an embedding process's other
// children are left alone.
//
// exec.Cmd.Wait is never used: it would race the wait4(-1) loop. Children
// therefore get *os.File stdio only, so exec.Cmd starts no copy goroutines.
type procTable struct {
	reapAll bool
	log     *logger.Logger

	mu      sync.Mutex
	waiters map[int]chan exitStatus
}

func newProcTable(reapAll bool, log *logger.Logger) *procTable {
	return &procTable{reapAll: reapAll, log: log, waiters: map[int]chan exitStatus{}}
}

// start starts cmd and returns its pid and a channel receiving its status
// once. The table lock is held across fork and registration so the reaper
// can never reap a pid before its waiter exists.
func (t *procTable) start(cmd *exec.Cmd) (int, <-chan exitStatus, error) {
	ch := make(chan exitStatus, 1)
	t.mu.Lock()
	if err := cmd.Start(); err != nil {
		t.mu.Unlock()
		return 0, nil, err
	}
	pid := cmd.Process.Pid
	// The pidfd (if any) is not needed: signals go by pid/pgid while the
	// child is known alive, and reaping is ours.
	_ = cmd.Process.Release()
	if t.reapAll {
		t.waiters[pid] = ch
		t.mu.Unlock()
		return pid, ch, nil
	}
	t.mu.Unlock()
	go func() {
		defer recoverLog(t.log, "wait_child")
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(pid, &ws, 0, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				t.log.Error().Str("event", "wait_failed").Int("pid", pid).Err(err).Msg("wait4 failed")
				ws = unix.WaitStatus(0xff00) // report exit 255
			}
			break
		}
		ch <- exitStatus{ws: ws}
	}()
	return pid, ch, nil
}

// reapLoop runs the wait4(-1) loop until ctx ends. Only meaningful with
// reapAll; it is a no-op otherwise.
func (t *procTable) reapLoop(ctx context.Context) {
	if !t.reapAll {
		return
	}
	sigc := make(chan os.Signal, 16)
	signal.Notify(sigc, syscall.SIGCHLD)
	defer signal.Stop(sigc)
	t.reapNow()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sigc:
			t.reapNow()
		}
	}
}

// reapNow reaps every child that has exited.
func (t *procTable) reapNow() {
	defer recoverLog(t.log, "reap")
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD or nothing exited yet
		}
		t.mu.Lock()
		ch, ok := t.waiters[pid]
		delete(t.waiters, pid)
		t.mu.Unlock()
		if ok {
			ch <- exitStatus{ws: ws}
			continue
		}
		t.log.Debug().Str("event", "orphan_reaped").Int("pid", pid).Int("status", int(ws)).Msg("reaped orphan")
	}
}

// recoverLog is deferred at the top of every goroutine: a panic is logged
// and swallowed so nothing the wire triggers can take PID 1 down.
func recoverLog(log *logger.Logger, where string) {
	if r := recover(); r != nil {
		log.Error().Str("event", "panic_recovered").Str("where", where).Interface("panic", r).Msg("recovered panic")
	}
}
