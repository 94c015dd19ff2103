package agent

import (
	"context"
	"crypto/tls"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/logger"
)

// openStream opens a raw Session to f as the CP would (after Hello).
func openStream(t testing.TB, p *dtPKI, f *fakeClawkerd) clawkerdv1.ClawkerdService_SessionClient {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.certPath, p.keyPath)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("passthrough:///"+f.addr, grpc.WithTransportCredentials(
		credentials.NewTLS(clientTLS(cert, p.pool, &peerRecorder{}))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := clawkerdv1.NewClawkerdServiceClient(conn).Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newExecEnv(t testing.TB) (*dtPKI, *overseer.Overseer, *dtRecorder, *Executor) {
	p := newDTPKI(t)
	bus := overseer.New(logger.Nop())
	rec := recordBus(t, bus)
	ex, err := NewExecutor(logger.Nop(), bus)
	if err != nil {
		t.Fatal(err)
	}
	return p, bus, rec, ex
}

func TestExecutorHaltsOnFailedStep(t *testing.T) {
	p, bus, rec, ex := newExecEnv(t)
	id := dtContainerID(t)
	f := startFake(t, p, &fakeClawkerd{failStep: map[string]int32{StepGit: 3}}, p.agentLeaf(t, "proj", "dev", id))
	// The worldview row exists once a Session starts (init events alone
	// never create one).
	bus.Publish(SessionConnecting{Subject: overseer.Subject{ContainerID: id}, At: time.Now()})
	err := ex.Run(context.Background(), openStream(t, p, f), InitTarget{ContainerID: id, AgentName: "dev", Project: "proj"})
	if err == nil {
		t.Fatal("Run succeeded despite a failing step")
	}
	want := []string{EventSessionConnecting, EventInitStarted, EventInitStepStarted, EventInitStepCompleted,
		EventInitStepStarted, EventInitStepFailed, EventInitFailed}
	rec.wait(t, id, EventInitFailed)
	if got := rec.names(id); !reflect.DeepEqual(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	ev := rec.events(id)[1:]
	sf := ev[4].(InitStepFailed)
	if sf.StepName != StepGit || sf.StepIndex != 2 || sf.ExitCode != 3 || sf.Reason != overseer.InitReasonNonZeroExit ||
		!strings.Contains(sf.Detail, "exit code 3") || !strings.Contains(sf.Detail, "hook says no") {
		t.Fatalf("InitStepFailed = %+v", sf)
	}
	ff := ev[5].(InitFailed)
	if ff.FailedStep != StepGit || ff.ExitCode != 3 || ff.Reason != overseer.InitReasonNonZeroExit || ff.Detail != sf.Detail {
		t.Fatalf("InitFailed = %+v", ff)
	}
	if f.saw(StepSSH) || f.saw("agent-ready-cmd") {
		t.Fatalf("plan continued past the failure: %v", f.seen())
	}
	if a, _ := bus.Agent(id); a.Init != overseer.InitStatusFailed || a.InitStepName != StepGit {
		t.Fatalf("worldview = %+v", a)
	}
}

func TestExecutorErrorReasons(t *testing.T) {
	cases := []struct {
		code   clawkerdv1.ErrorCode
		reason overseer.InitFailureReason
	}{
		{clawkerdv1.ErrorCode_ERROR_CODE_TIMEOUT, overseer.InitReasonTimeout},
		{clawkerdv1.ErrorCode_ERROR_CODE_IO_ERROR, overseer.InitReasonRemoteError},
		{clawkerdv1.ErrorCode_ERROR_CODE_SPAWN_FAILED, overseer.InitReasonSpawnFailed},
	}
	for _, c := range cases {
		t.Run(c.code.String(), func(t *testing.T) {
			p, _, rec, ex := newExecEnv(t)
			id := dtContainerID(t)
			f := startFake(t, p, &fakeClawkerd{errStep: map[string]clawkerdv1.ErrorCode{StepPostInit: c.code}},
				p.agentLeaf(t, "proj", "dev", id))
			if err := ex.Run(context.Background(), openStream(t, p, f), InitTarget{ContainerID: id}); err == nil {
				t.Fatal("Run succeeded")
			}
			ff := rec.wait(t, id, EventInitFailed).(InitFailed)
			if ff.Reason != c.reason || ff.FailedStep != StepPostInit || ff.ExitCode != -1 {
				t.Fatalf("InitFailed = %+v", ff)
			}
			if f.saw("agent-initialized") {
				t.Fatal("AgentInitialized sent after a failed post-init")
			}
		})
	}
}

func TestExecutorImageWithoutShell(t *testing.T) {
	p, _, rec, ex := newExecEnv(t)
	id := dtContainerID(t)
	f := startFake(t, p, &fakeClawkerd{noShell: true}, p.agentLeaf(t, "proj", "dev", id))
	if err := ex.Run(context.Background(), openStream(t, p, f), InitTarget{ContainerID: id}); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, id, EventInitCompleted)
	if got := f.seen(); !reflect.DeepEqual(got, []string{"probe-user", "agent-ready-cmd"}) {
		t.Fatalf("clawkerd saw %v: shell steps must be skipped, agent-ready still sent", got)
	}
	if rec.has(id, EventInitStepFailed) {
		t.Fatal("no-shell image must not fail init")
	}
}

func TestExecutorTransportFailure(t *testing.T) {
	p, _, rec, ex := newExecEnv(t)
	id := dtContainerID(t)
	f := startFake(t, p, &fakeClawkerd{}, p.agentLeaf(t, "proj", "dev", id))
	s := openStream(t, p, f)
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := ex.Run(context.Background(), s, InitTarget{ContainerID: id}); err == nil {
		t.Fatal("Run on a dead stream succeeded")
	}
	ff := rec.wait(t, id, EventInitFailed).(InitFailed)
	if ff.Reason != overseer.InitReasonTransport {
		t.Fatalf("InitFailed = %+v", ff)
	}
}

// TestExecutor20RunsInParallel proves Runs on different streams are not
// serialised: the fake holds every probe until all 20 have arrived, which
// can only happen when the 20 Runs are in flight at once.
func TestExecutor20RunsInParallel(t *testing.T) {
	const n = 20
	p, _, rec, ex := newExecEnv(t)
	var mu sync.Mutex
	arrived := 0
	all := make(chan struct{})
	gate := func() {
		mu.Lock()
		arrived++
		if arrived == n {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-time.After(10 * time.Second):
		}
	}
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		ids[i] = dtContainerID(t)
		f := startFake(t, p, &fakeClawkerd{probeGate: gate}, p.agentLeaf(t, "proj", "dev", ids[i]))
		s := openStream(t, p, f)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = ex.Run(context.Background(), s, InitTarget{ContainerID: ids[i]})
		}(i)
	}
	wg.Wait()
	select {
	case <-all:
	default:
		t.Fatalf("only %d of %d Runs were in flight together", arrived, n)
	}
	for i, id := range ids {
		if errs[i] != nil {
			t.Fatalf("run %d: %v", i, errs[i])
		}
		rec.wait(t, id, EventInitCompleted)
	}
}

func TestExecutorCancelled(t *testing.T) {
	p, _, rec, ex := newExecEnv(t)
	id := dtContainerID(t)
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	f := startFake(t, p, &fakeClawkerd{probeGate: func() { <-block }}, p.agentLeaf(t, "proj", "dev", id))
	cert, _ := tls.LoadX509KeyPair(p.certPath, p.keyPath)
	conn, err := grpc.NewClient("passthrough:///"+f.addr, grpc.WithTransportCredentials(
		credentials.NewTLS(clientTLS(cert, p.pool, &peerRecorder{}))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := clawkerdv1.NewClawkerdServiceClient(conn).Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ex.Run(ctx, s, InitTarget{ContainerID: id}) }()
	dtWait(t, "probe in flight", func() bool { return f.saw("probe-user") })
	cancel()
	if err := <-done; err == nil {
		t.Fatal("cancelled Run returned nil")
	}
	if ff := rec.wait(t, id, EventInitFailed).(InitFailed); ff.Reason != overseer.InitReasonCancelled {
		t.Fatalf("InitFailed = %+v", ff)
	}
}

func TestParseProbe(t *testing.T) {
	u, err := parseProbe("noise\n1000:100:/home/dev\n")
	if err != nil || u.uid != 1000 || u.gid != 100 || u.home != "/home/dev" {
		t.Fatalf("%+v %v", u, err)
	}
	if _, err := parseProbe("garbage"); err == nil {
		t.Fatal("garbage accepted")
	}
	if u, err := parseProbe("x:1:/"); err == nil || u != rootUser {
		t.Fatal("bad uid must fall back to root with an error")
	}
}
