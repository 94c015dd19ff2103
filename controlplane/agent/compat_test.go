package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/testenv/oldclawkerd"
)

// serveOld serves a base-contract clawkerd for a fresh, registered
// container over strict mTLS and points the resolver at it.
func serveOld(t *testing.T, env *dtEnv, srv *oldclawkerd.Server) string {
	t.Helper()
	id := dtContainerID(t)
	leaf := env.pki.agentLeaf(t, "proj", "dev", id)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    env.pki.pool,
		MinVersion:   tls.VersionTLS13,
	})))
	clawkerdv1.RegisterClawkerdServiceServer(gs, srv)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	addRow(t, env.reg, id, leaf)
	env.targets.set(id, DialTarget{Address: ln.Addr().String(), AgentName: "dev", Project: "proj"})
	return id
}

// seqOutput is `seq 1 n` as the command prints it.
func seqOutput(n int) []byte {
	var b bytes.Buffer
	for i := 1; i <= n; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// The base-contract peer (no capabilities, unknown payloads rejected,
// Done only after CloseStdin): the init plan completes only because every
// init command gets CloseStdin, and an exec of more than 8 MiB delivers
// every byte with no flow control on the wire. Before capability gating
// the CP set output_window and sent OutputCredit after 2 MiB, which this
// peer answered with INVALID_REQUEST, ending the exec mid-stream.
func TestOldClawkerdInitAndExec8MiB(t *testing.T) {
	env := newDTEnv(t, nil)
	old := &oldclawkerd.Server{}
	id := serveOld(t, env, old)
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	if env.rec.has(id, EventInitFailed) {
		t.Fatalf("events %v", env.rec.names(id))
	}
	if n := len(old.Shells()); n != 6 { // probe + 5 shell steps
		t.Fatalf("old peer ran %d shell commands, want the probe and 5 steps", n)
	}
	dtWait(t, "session ready", func() bool { s := env.dialer.Sessions(); return len(s) == 1 && s[0].Ready })

	const lines = 1_200_000 // ~8.3 MiB
	want := seqOutput(lines)
	if len(want) < 8<<20 {
		t.Fatalf("test output only %d bytes", len(want))
	}
	h, err := env.dialer.Exec(context.Background(), id, &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{
		Argv: []string{"seq", "1", strconv.Itoa(lines)}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.CloseStdin(); err != nil { // what `clawker exec` without -i sends
		t.Fatal(err)
	}
	var got bytes.Buffer
	code := int32(-100)
	for r := range h.Responses() {
		got.Write(r.GetOutput().GetData())
		if d := r.GetDone(); d != nil {
			code = d.GetFinalExitCode()
		}
		if e := r.GetError(); e != nil {
			t.Fatalf("exec error after %d bytes: %v", got.Len(), e)
		}
	}
	if code != 0 || !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("exec: code %d, %d bytes (want %d)", code, got.Len(), len(want))
	}
	if r := old.Rejected(); len(r) != 0 {
		t.Fatalf("the CP sent payloads the peer never announced: %v", r)
	}
	for _, sc := range old.Shells() {
		if sc.GetOutputWindow() != 0 {
			t.Fatalf("output_window %d sent to a peer without flow control", sc.GetOutputWindow())
		}
	}
}

// A step whose reply never comes is bounded: InitStepFailed{timeout}, then
// InitFailed; the command is SIGKILLed, and the Session stays up for
// diagnosis (exec works, the worldview shows the failed step).
func TestInitStepThatNeverAnswersIsBounded(t *testing.T) {
	env := newDTEnv(t, nil)
	const bound = 300 * time.Millisecond
	// Short only for the built-in steps (the swallowed one): the probe
	// keeps its real bound, so a loaded machine cannot fail it instead.
	env.exec.stepWait = func(timeout time.Duration) time.Duration {
		if timeout == builtinStepTimeout {
			return bound
		}
		return stepWaitBound(timeout)
	}
	old := &oldclawkerd.Server{Swallow: func(sc *clawkerdv1.ShellCommand) bool {
		argv := sc.GetStages()[0].GetArgv()
		return len(argv) == 3 && argv[2] != probeScript && !strings.Contains(argv[2], "diag")
	}}
	id := serveOld(t, env, old)
	start := time.Now()
	env.dialer.DialAgent(context.Background(), id)
	failed := env.rec.wait(t, id, EventInitFailed).(InitFailed)
	took := time.Since(start)
	if failed.Reason != "timeout" || failed.FailedStep != StepConfig || took > bound+5*time.Second {
		t.Fatalf("InitFailed %+v after %s", failed, took)
	}
	var stepFailed *InitStepFailed
	for _, e := range env.rec.events(id) {
		if sf, ok := e.(InitStepFailed); ok {
			stepFailed = &sf
		}
		if _, ok := e.(InitFailed); ok && stepFailed == nil {
			t.Fatal("InitFailed before InitStepFailed")
		}
	}
	if stepFailed == nil || stepFailed.Reason != "timeout" || stepFailed.StepName != StepConfig ||
		!strings.Contains(stepFailed.Detail, "no reply within") {
		t.Fatalf("InitStepFailed %+v", stepFailed)
	}
	dtWait(t, "swallowed step SIGKILLed", func() bool {
		for cid, sigs := range old.Signals() {
			if strings.HasPrefix(cid, "init/"+StepConfig+"/") && len(sigs) == 1 && sigs[0] == 9 {
				return true
			}
		}
		return false
	})
	// Kept for diagnosis: the Session serves exec, the worldview says why.
	dtWait(t, "session ready", func() bool { s := env.dialer.Sessions(); return len(s) == 1 && s[0].Ready })
	h, err := env.dialer.Exec(context.Background(), id, &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{
		Argv: []string{"/bin/sh", "-c", "echo diag"}}}})
	if err != nil {
		t.Fatal(err)
	}
	_ = h.CloseStdin()
	if out, done, e := drain(t, h); out != "diag\n" || done == nil || e != nil {
		t.Fatalf("diagnostic exec: %q %v %v", out, done, e)
	}
	a, ok := env.bus.Agent(id)
	if !ok || a.Init != "failed" || a.InitStepName != StepConfig || a.InitFailReason != "timeout" ||
		!strings.Contains(a.LastError, "no reply within") {
		t.Fatalf("worldview %+v", a)
	}
	if env.rec.has(id, EventSessionBroken) || env.rec.has(id, EventSessionClosed) {
		t.Fatalf("session not kept: %v", env.rec.names(id))
	}
}

// The current clawkerd announces flow-control/v1, so the CP's exec to it
// is flow controlled: the window goes on the wire and credit comes back
// (16 MiB through a 4 MiB window completes only with credits).
func TestRealClawkerdGetsFlowControl(t *testing.T) {
	env := newDTEnv(t, nil)
	id := dtContainerID(t)
	startRealClawkerd(t, env, id)
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	dtWait(t, "session ready", func() bool { s := env.dialer.Sessions(); return len(s) == 1 && s[0].Ready })
	const lines = 2_200_000 // ~16 MiB
	h, err := env.dialer.Exec(context.Background(), id, &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{
		Argv: []string{"seq", "1", strconv.Itoa(lines)}}}})
	if err != nil {
		t.Fatal(err)
	}
	if h.window != ExecOutputWindow {
		t.Fatalf("exec window %d, want %d", h.window, ExecOutputWindow)
	}
	out, done, e := drain(t, h)
	if e != nil || done == nil || done.GetFinalExitCode() != 0 || out != string(seqOutput(lines)) {
		t.Fatalf("exec: %d bytes, done %v, err %v", len(out), done, e)
	}
}

// The reverse: a CP that knows none of the additions (no output_window,
// no OutputCredit, no CloseStdin) still gets every byte and a Done from
// the current clawkerd.
func TestRealClawkerdServesBaseContractCP(t *testing.T) {
	env := newDTEnv(t, nil)
	id := dtContainerID(t)
	addr, _ := startRealClawkerd(t, env, id)
	stream := openStream(t, env.pki, &fakeClawkerd{addr: addr})
	if err := stream.Send(&clawkerdv1.Command{CommandId: "h", Payload: &clawkerdv1.Command_Hello{Hello: &clawkerdv1.Hello{}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := stream.Recv(); err != nil || r.GetHelloAck() == nil {
		t.Fatalf("hello: %v %v", r, err)
	}
	const lines = 1_200_000
	if err := stream.Send(&clawkerdv1.Command{CommandId: "big", Payload: &clawkerdv1.Command_Shell{Shell: &clawkerdv1.ShellCommand{
		Stages: []*clawkerdv1.PipeStage{{Argv: []string{"seq", "1", strconv.Itoa(lines)}}}}}}); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	for {
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got.Write(r.GetOutput().GetData())
		if e := r.GetError(); e != nil {
			t.Fatalf("error: %v", e)
		}
		if d := r.GetDone(); d != nil {
			if d.GetFinalExitCode() != 0 || !bytes.Equal(got.Bytes(), seqOutput(lines)) {
				t.Fatalf("code %d, %d bytes", d.GetFinalExitCode(), got.Len())
			}
			return
		}
	}
}
