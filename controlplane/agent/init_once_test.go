package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// killStream is the CP side of a Session that "dies" after `at` messages
// (Sends and Recvs counted together; at < 0: never): the message at that
// boundary is not sent or not delivered, the stream is torn down and the
// dial cancelled, as a CP crash ends it.
type killStream struct {
	clawkerdv1.ClawkerdService_SessionClient
	at     int
	kill   func()
	mu     sync.Mutex
	n      int
	killed bool
}

var errKilled = errors.New("cp killed (test)")

// step counts one message; false when the CP dies at this boundary.
func (k *killStream) step() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.killed {
		return false
	}
	if k.n == k.at {
		k.killed = true
		k.kill()
		return false
	}
	k.n++
	return true
}

func (k *killStream) Send(c *clawkerdv1.Command) error {
	if !k.step() {
		return errKilled
	}
	return k.ClawkerdService_SessionClient.Send(c)
}

func (k *killStream) Recv() (*clawkerdv1.Response, error) {
	r, err := k.ClawkerdService_SessionClient.Recv()
	if err != nil {
		return nil, err
	}
	if !k.step() {
		return nil, errKilled
	}
	return r, nil
}

func (k *killStream) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.n
}

var onceStepNames = []string{StepConfig, StepGit, StepSSH, StepPostInit}

// oncePlan is the one-time half of the real plan, with scripts that
// append their step's name to log (the real ones need the staging tree).
func oncePlan(log string) func(InitTarget) []step {
	return func(t InitTarget) []step {
		if t.Initialized {
			return nil
		}
		var plan []step
		for i, name := range onceStepNames {
			plan = append(plan, step{name: name, once: true, timeout: builtinStepTimeout,
				markInitialized: i == len(onceStepNames)-1,
				script:          func(userInfo) string { return "echo " + name + " >> " + shQuote(log) }})
		}
		return plan
	}
}

// runKilledAt initializes a fresh agent whose first Session dies at
// message boundary at, then reconnects it, and returns the step log and
// how many messages the first Session passed.
func runKilledAt(t *testing.T, at int) (runs map[string]int, passed int, initialized bool) {
	t.Helper()
	env := newDTEnv(t, nil)
	id := dtContainerID(t)
	_, marker := startRealClawkerd(t, env, id)
	log := filepath.Join(t.TempDir(), "runs")
	env.exec.plan = oncePlan(log)
	first := &killStream{at: at}
	var wrapped atomic.Bool
	env.dialer.wrapStream = func(_ string, s clawkerdv1.ClawkerdService_SessionClient, cancel context.CancelFunc) clawkerdv1.ClawkerdService_SessionClient {
		if !wrapped.CompareAndSwap(false, true) {
			return s // the reconnected CP lives
		}
		first.ClawkerdService_SessionClient = s
		first.kill = func() {
			cancel()
			go env.dialer.CancelDial(id)
		}
		return first
	}
	env.dialer.DialAgent(context.Background(), id)
	if at >= 0 {
		dtWait(t, fmt.Sprintf("first session killed at %d gone", at), func() bool {
			first.mu.Lock()
			killed := first.killed
			first.mu.Unlock()
			return killed && len(env.dialer.Sessions()) == 0
		})
		env.dialer.DialAgent(context.Background(), id)
	}
	env.rec.wait(t, id, EventInitCompleted)
	if env.rec.has(id, EventInitFailed) && at < 0 {
		t.Fatalf("events %v", env.rec.names(id))
	}
	b, err := os.ReadFile(log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	runs = map[string]int{}
	for _, l := range strings.Fields(string(b)) {
		runs[l]++
	}
	_, merr := os.Stat(marker)
	return runs, first.count(), merr == nil
}

// TestInitOnceAcrossCPCrashAtEveryMessage kills the CP side of the
// Session at every message boundary of the one-time plan (before each
// Send, after each Recv) and reconnects: every one-time step has run
// exactly once and the init marker is written.
func TestInitOnceAcrossCPCrashAtEveryMessage(t *testing.T) {
	_, total, ok := runKilledAt(t, -1)
	if !ok || total < 3*len(onceStepNames) {
		t.Fatalf("uninterrupted plan: %d messages, initialized %v", total, ok)
	}
	for at := 0; at < total; at++ {
		runs, _, ok := runKilledAt(t, at)
		for _, name := range onceStepNames {
			if runs[name] != 1 {
				t.Errorf("CP killed after %d of %d messages: %s ran %d times, want 1 (%v)", at, total, name, runs[name], runs)
			}
		}
		if !ok {
			t.Errorf("CP killed after %d messages: init marker not written", at)
		}
	}
	t.Logf("killed at each of %d message boundaries", total)
}
