package agent

import (
	"context"
	"errors"
	"sync"
	"testing"

	"google.golang.org/grpc"
)

// failingCloses makes the dialer's closes report failure (after really
// closing) while fail() is true, and counts them.
func failingCloses(env *dtEnv, fail func() bool) *int {
	var mu sync.Mutex
	n := new(int)
	env.dialer.closeConn = func(c *grpc.ClientConn) error {
		_ = c.Close()
		if !fail() {
			return nil
		}
		mu.Lock()
		*n++
		mu.Unlock()
		return errors.New("close: bad file descriptor")
	}
	return n
}

// sessionCycle dials id, waits for its i-th SessionConnected and tears
// the Session down again.
func sessionCycle(t *testing.T, env *dtEnv, id string, i int) {
	t.Helper()
	env.dialer.DialAgent(context.Background(), id)
	dtWait(t, "session connected", func() bool { return countEvents(env, id, EventSessionConnected) == i })
	env.dialer.CancelDial(id)
}

// A successful dial whose Close keeps failing reaches the ceiling too:
// after closeErrCeiling Sessions whose close failed, the target is given
// up with SessionFailed{fd-leak-ceiling} and not dialed again.
func TestDialFDLeakCeilingCoversEstablishedSessions(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{initialized: true, cmdRunning: true}
	id, _ := env.agent(t, f)
	addRow(t, env.reg, id, f.leaf)
	closes := failingCloses(env, func() bool { return true })
	for i := 1; i <= closeErrCeiling; i++ {
		sessionCycle(t, env, id, i)
	}
	sf := env.rec.wait(t, id, EventSessionFailed).(SessionFailed)
	if sf.Reason != FailFDLeakCeiling || *closes != closeErrCeiling {
		t.Fatalf("SessionFailed = %+v after %d failed closes", sf, *closes)
	}
	sessions := f.sessions.Load()
	env.dialer.DialAgent(context.Background(), id)
	dtWait(t, "second SessionFailed", func() bool { return countEvents(env, id, EventSessionFailed) == 2 })
	dtWait(t, "dial ended", func() bool { return len(env.dialer.Sessions()) == 0 })
	if f.sessions.Load() != sessions {
		t.Fatal("a target past the ceiling was dialed again")
	}
}

// One successful close resets the count: ceiling-1 failures, a success,
// ceiling-1 failures never trip it.
func TestDialFDLeakCounterResetsOnSuccessfulClose(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{initialized: true, cmdRunning: true}
	id, _ := env.agent(t, f)
	addRow(t, env.reg, id, f.leaf)
	var cycle int
	var mu sync.Mutex
	closes := failingCloses(env, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return cycle != closeErrCeiling // the ceiling-th Session closes fine
	})
	for i := 1; i <= 2*closeErrCeiling-1; i++ {
		mu.Lock()
		cycle = i
		mu.Unlock()
		sessionCycle(t, env, id, i)
	}
	if env.rec.has(id, EventSessionFailed) || *closes != 2*closeErrCeiling-2 {
		t.Fatalf("events %v after %d failed closes", env.rec.names(id), *closes)
	}
	if n := env.dialer.closeFailures(id); n != closeErrCeiling-1 {
		t.Fatalf("count = %d, want %d", n, closeErrCeiling-1)
	}
}
