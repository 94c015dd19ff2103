package agent

import (
	"context"
	"errors"
	"net"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

func readyLive(env *dtEnv) bool { s := env.dialer.Sessions(); return len(s) == 1 && s[0].Ready }

// A network change that leaves the Session's address alone keeps it (and
// its execs); one that takes the address away tears it down at once (the
// exec fails now, SessionBroken names the change, a new exec fails at
// once with ErrNoSession); the reconnect redials at once, and an exec
// waiting for a Session (Exec with WaitForSession) then runs. A change of a stopped
// container is left to the lifecycle events.
func TestNetworkChangedRedials(t *testing.T) {
	env := newDTEnv(t, nil)
	id := dtContainerID(t)
	startRealClawkerd(t, env, id)
	ctx := context.Background()
	env.dialer.DialAgent(ctx, id)
	env.rec.wait(t, id, EventInitCompleted)
	dtWait(t, "session ready", func() bool { return readyLive(env) })
	long, err := env.dialer.Exec(ctx, id, &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{Argv: []string{"sleep", "600"}}}})
	if err != nil {
		t.Fatal(err)
	}

	env.dialer.NetworkChanged(ctx, id, "network connect other")
	if !readyLive(env) || env.rec.has(id, EventSessionBroken) {
		t.Fatalf("a change that kept the address ended the Session: %v", env.rec.names(id))
	}
	long.mu.Lock()
	done := long.done
	long.mu.Unlock()
	if done {
		t.Fatal("the exec ended on a change that kept the address")
	}

	env.targets.fail(id, errors.New("not attached to the agent network"))
	env.dialer.NetworkChanged(ctx, id, "network disconnect agent-net")
	if _, _, exErr := drain(t, long); exErr == nil {
		t.Fatal("the exec on the broken path did not fail")
	}
	ev := env.rec.wait(t, id, EventSessionBroken).(SessionBroken)
	if !strings.Contains(ev.Reason, "network disconnect") {
		t.Fatalf("SessionBroken reason %q", ev.Reason)
	}
	if _, err := env.dialer.Exec(ctx, id, &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{Argv: []string{"true"}}}}); !errors.Is(err, ErrNoSession) {
		t.Fatalf("exec without a Session: %v, want ErrNoSession at once", err)
	}

	type res struct {
		h   *ExecHandle
		err error
	}
	waited := make(chan res, 1)
	go func() {
		h, err := env.dialer.Exec(ctx, id, &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{Argv: []string{"echo", "back"}}}}, WaitForSession(20*time.Second), AllowUntrusted(true))
		waited <- res{h, err}
	}()
	env.targets.fail(id, nil)
	env.dialer.NetworkChanged(ctx, id, "network connect agent-net")
	r := <-waited
	if r.err != nil {
		t.Fatalf("Exec with wait: %v", r.err)
	}
	if out, d, exErr := drain(t, r.h); out != "back\n" || d == nil || exErr != nil {
		t.Fatalf("exec after reconnect: %q %v %v", out, d, exErr)
	}

	// A stop detaches networks too: left to the die event.
	env.targets.fail(id, ErrContainerNotRunning)
	env.dialer.NetworkChanged(ctx, id, "network disconnect agent-net")
	if !readyLive(env) {
		t.Fatal("a stopped container's network event tore the Session down")
	}
}

// Exec with WaitForSession gives up after its wait with ErrNoSession.
func TestExecWaitTimesOut(t *testing.T) {
	env := newDTEnv(t, nil)
	_, err := env.dialer.Exec(context.Background(), "nope", &clawkerdv1.ShellCommand{}, WaitForSession(50*time.Millisecond))
	if !errors.Is(err, ErrNoSession) {
		t.Fatalf("Exec with wait, without a Session: %v", err)
	}
}

// Every Session socket has TCP keepalive after 1 s of silence and a
// TCP_USER_TIMEOUT of keepaliveTimeout, so a dead path ends the Session
// in seconds (gRPC's own pings cannot go below 10 s).
func TestSessionSocketKeepalive(t *testing.T) {
	env := newDTEnv(t, nil)
	var mu sync.Mutex
	var conns []net.Conn
	plain := env.dialer.dialTCP
	env.dialer.dialTCP = func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := plain(ctx, addr)
		if err == nil {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
		return c, err
	}
	id := dtContainerID(t)
	startRealClawkerd(t, env, id)
	env.dialer.DialAgent(context.Background(), id)
	dtWait(t, "session ready", func() bool { return readyLive(env) })
	mu.Lock()
	defer mu.Unlock()
	checked := 0
	for _, c := range conns {
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var ka, idle, uto int
		var gerr error
		if err := rc.Control(func(fd uintptr) {
			ka, gerr = unix.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
			if gerr == nil {
				idle, gerr = unix.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, unix.TCP_KEEPIDLE)
			}
			if gerr == nil {
				uto, gerr = unix.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
			}
		}); err != nil {
			continue // a probe conn that was closed
		}
		if gerr != nil {
			continue
		}
		if ka != 1 || idle != int(tcpKeepaliveIdle/time.Second) || uto != int(keepaliveTimeout/time.Millisecond) {
			t.Fatalf("session socket: keepalive %d idle %ds user timeout %dms", ka, idle, uto)
		}
		checked++
	}
	if checked == 0 {
		t.Fatalf("no open session socket among %d dialed", len(conns))
	}
}

// A path change seen while a Session is up but still registering (before
// the init plan makes it ready) keeps it: the CP joining an agent's
// network at restart used to cut such a Session and dial it again.
func TestNetworkChangedKeepsSessionStillInitializing(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{registerOK: true}
	id, _ := env.agent(t, f)
	inRegister, release := make(chan struct{}), make(chan struct{})
	f.onRegister = func() {
		close(inRegister)
		<-release
		addRow(t, env.reg, id, f.leaf)
	}
	ctx := context.Background()
	env.dialer.DialAgent(ctx, id)
	<-inRegister
	env.dialer.NetworkChanged(ctx, id, "network connect agent-net")
	close(release)
	env.rec.wait(t, id, EventInitCompleted)
	if got := env.rec.names(id); !reflect.DeepEqual(got, fullPlan) {
		t.Fatalf("events:\n got %v\nwant %v", got, fullPlan)
	}
	if n := f.sessions.Load(); n != 1 {
		t.Fatalf("%d Sessions opened, want 1", n)
	}
}

// A path change whose inspect is slow judges the Session as it is when
// the inspect returns: a dial that connected meanwhile is kept, not cut
// for having been still connecting when the change arrived.
func TestNetworkChangedJudgesAfterItsInspect(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{registerOK: true}
	id, _ := env.agent(t, f)
	f.onRegister = func() { addRow(t, env.reg, id, f.leaf) }
	hold := make(chan struct{})
	env.targets.mu.Lock()
	env.targets.hold = hold
	env.targets.mu.Unlock()
	ctx := context.Background()
	env.dialer.DialAgent(ctx, id)
	dtWait(t, "the dial resolved its target", func() bool { return env.targets.calls(id) >= 1 })
	changed := make(chan struct{})
	go func() { defer close(changed); env.dialer.NetworkChanged(ctx, id, "network connect agent-net") }()
	dtWait(t, "the change is inspecting", func() bool { return env.targets.calls(id) >= 2 })
	env.rec.wait(t, id, EventSessionConnected)
	close(hold)
	<-changed
	env.rec.wait(t, id, EventInitCompleted)
	if got := env.rec.names(id); !reflect.DeepEqual(got, fullPlan) {
		t.Fatalf("events:\n got %v\nwant %v", got, fullPlan)
	}
	if n := f.sessions.Load(); n != 1 {
		t.Fatalf("%d Sessions opened, want 1", n)
	}
}
