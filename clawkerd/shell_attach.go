package clawkerd

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// errNoUserTerm: the user CMD was not started with CLAWKER_TTY=1.
var errNoUserTerm = errors.New("the agent's command has no terminal (it was not started with run -t)")

// spawnAttach attaches this command to the user CMD's terminal
// (ShellCommand.attach_user_cmd): once the user CMD runs, output is a
// subscription to its terminal, stdin a dup of its master; the one
// "stage" ends when the user CMD exits or the client detaches.
func (c *shellCmd) spawnAttach() (exits []<-chan exitStatus, outR, inW *os.File, err error) {
	sup := c.sess.srv.sup
	select {
	case <-sup.ready:
	case <-c.sess.ctx.Done():
		return nil, nil, nil, errors.New("session closed before the user CMD started")
	case <-c.abort:
		return nil, nil, nil, errors.New("detached before the user CMD started")
	}
	sup.mu.Lock()
	term, pid, exited := sup.term, sup.pid, sup.exited
	sup.mu.Unlock()
	if term == nil {
		return nil, nil, nil, errNoUserTerm
	}
	outR, unsubscribe, err := term.subscribe()
	if err != nil {
		return nil, nil, nil, err
	}
	if inW, err = dupFile(term.master, "attach-stdin"); err != nil {
		unsubscribe()
		_ = outR.Close()
		return nil, nil, nil, err
	}
	exit := make(chan exitStatus, 1)
	go func() {
		defer recoverLog(c.sess.log, "attach_wait")
		userExit := func() {
			sup.mu.Lock()
			st := sup.status
			sup.mu.Unlock()
			exit <- st
		}
		select {
		case <-exited:
			// The exit can beat pump to the CMD's last output ("exit 4"
			// right after a print): let it reach this client first.
			term.awaitDrained()
			userExit()
		case <-c.detached:
			select {
			case <-exited: // both: the exit is what the client wants to know
				userExit()
			default:
				exit <- exitStatus{}
			}
		}
		unsubscribe()
	}()
	c.mu.Lock()
	c.pids, c.live, c.ptyMaster, c.attached = append(c.pids, pid), append(c.live, true), term.master, true
	c.mu.Unlock()
	c.sess.srv.attaches.add(c)
	if t := c.spec.GetTty(); t.GetRows() > 0 && t.GetCols() > 0 {
		_ = setSize(term.master, t.GetRows(), t.GetCols())
	}
	// A full-screen program redraws for the newcomer.
	_ = unix.Kill(-pid, syscall.SIGWINCH)
	c.markSpawned()
	return []<-chan exitStatus{exit}, outR, inW, nil
}

// detach ends an attach without touching the user CMD.
func (c *shellCmd) detach() {
	c.detachOnce.Do(func() { close(c.detached) })
}

// validateAttach checks an attach_user_cmd request.
func validateAttach(n int) error {
	if n != 0 {
		return fmt.Errorf("attach_user_cmd takes no stages, got %d", n)
	}
	return nil
}

// attachReplyGrace bounds how long the user CMD's exit waits for the
// attached clients' exit-code replies before clawkerd ends the Sessions.
const attachReplyGrace = 3 * time.Second

// attachSet is the live attaches. When the user CMD exits, Serve waits
// for each to send its Done (the CMD's exit code) before ending the
// Sessions, so every attached client gets the code, as docker attach does.
type attachSet struct {
	mu   sync.Mutex
	live map[*shellCmd]struct{}
}

func (a *attachSet) add(c *shellCmd) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.live == nil {
		a.live = map[*shellCmd]struct{}{}
	}
	a.live[c] = struct{}{}
}

func (a *attachSet) remove(c *shellCmd) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.live, c)
}

// awaitReplies waits until every attach live now has replied (its run
// ended), or d has passed; it reports how many had not.
func (a *attachSet) awaitReplies(d time.Duration) int {
	a.mu.Lock()
	dones := make([]<-chan struct{}, 0, len(a.live))
	for c := range a.live {
		dones = append(dones, c.done)
	}
	a.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	for i, done := range dones {
		select {
		case <-done:
		case <-t.C:
			return len(dones) - i
		}
	}
	return 0
}
