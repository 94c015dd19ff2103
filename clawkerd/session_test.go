package clawkerd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv/testpki"
)

func TestHelloReportsMarkerAndCmd(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.UserCmd = []string{"sleep", "60"} })
	c := ts.session(t)
	if ack := c.hello(); ack.GetInitialized() || ack.GetCmdRunning() {
		t.Fatalf("fresh: %v", ack)
	}
	c.send(&clawkerdv1.Command{CommandId: "init", Payload: &clawkerdv1.Command_AgentInitialized{AgentInitialized: &clawkerdv1.AgentInitialized{}}})
	if r := c.next("init"); r.GetDone() == nil || r.GetDone().GetFinalExitCode() != 0 {
		t.Fatalf("AgentInitialized: %v", r)
	}
	if _, err := os.Stat(ts.srv.cfg.InitMarkerPath); err != nil {
		t.Fatalf("marker not written: %v", err)
	}
	c.send(&clawkerdv1.Command{CommandId: "ready", Payload: &clawkerdv1.Command_AgentReady{AgentReady: &clawkerdv1.AgentReady{}}})
	if r := c.next("ready"); r.GetDone() == nil {
		t.Fatalf("AgentReady: %v", r)
	}
	if ack := c.hello(); !ack.GetInitialized() || !ack.GetCmdRunning() {
		t.Fatalf("after init+ready: %v", ack)
	}
	// A fresh Session (CP reconnect) sees the same process-wide state.
	c2 := ts.session(t)
	if ack := c2.hello(); !ack.GetInitialized() || !ack.GetCmdRunning() {
		t.Fatalf("second session: %v", ack)
	}
}

func TestAgentReadySpawnsOnceAndExitCodePropagates(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.UserCmd = []string{"sh", "-c", "echo spawned-$$; exec sleep 60"}
	})
	c := ts.session(t)
	for i := 0; i < 3; i++ {
		id := "ready" + string(rune('a'+i))
		c.send(&clawkerdv1.Command{CommandId: id, Payload: &clawkerdv1.Command_AgentReady{AgentReady: &clawkerdv1.AgentReady{DefaultCmd: "echo never"}}})
		if r := c.next(id); r.GetDone().GetFinalExitCode() != 0 || r.GetDone() == nil {
			t.Fatalf("AgentReady %d: %v", i, r)
		}
	}
	eventually(t, 10*time.Second, "user CMD output", func() bool { return strings.Contains(ts.console.String(), "spawned-") })
	if n := strings.Count(ts.console.String(), "spawned-"); n != 1 {
		t.Fatalf("user CMD spawned %d times", n)
	}
	if strings.Contains(ts.console.String(), "never") {
		t.Fatal("default_cmd ran although the container has a CMD")
	}
	if !ts.srv.ForwardSignal(syscall.SIGTERM) {
		t.Fatal("ForwardSignal found no running user CMD")
	}
	select {
	case err := <-ts.serveCh:
		ee, ok := err.(*ExitError)
		if !ok || ee.Code != 143 {
			t.Fatalf("Serve returned %v, want ExitError 143", err)
		}
		ts.serveCh <- err // for cleanup
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return after the user CMD died")
	}
}

func TestAgentReadyDefaultCmd(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	c.send(&clawkerdv1.Command{CommandId: "r", Payload: &clawkerdv1.Command_AgentReady{AgentReady: &clawkerdv1.AgentReady{DefaultCmd: "echo via-default; exit 3"}}})
	if r := c.next("r"); r.GetDone() == nil {
		t.Fatalf("AgentReady: %v", r)
	}
	select {
	case err := <-ts.serveCh:
		if ee, ok := err.(*ExitError); !ok || ee.Code != 3 {
			t.Fatalf("Serve returned %v, want ExitError 3", err)
		}
		ts.serveCh <- err
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return")
	}
	// The test console is a pipe drained by its own goroutine, which may
	// still be copying when the CMD's exit is observed.
	eventually(t, 10*time.Second, "via-default on the console", func() bool {
		return strings.Contains(ts.console.String(), "via-default")
	})
}

func TestAgentReadyNoCmdKeepsSupervising(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	c.send(&clawkerdv1.Command{CommandId: "r", Payload: &clawkerdv1.Command_AgentReady{AgentReady: &clawkerdv1.AgentReady{}}})
	if r := c.next("r"); r.GetDone() == nil {
		t.Fatalf("AgentReady: %v", r)
	}
	if ack := c.hello(); ack.GetCmdRunning() {
		t.Fatal("cmd_running with no CMD")
	}
	if res := c.run("still", stages(stage("echo", "alive"))); trimLines(res.output) != "alive" {
		t.Fatal("server stopped serving after AgentReady without CMD")
	}
}

func TestAgentReadyRunsAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	passwd := dir + "/passwd"
	group := dir + "/group"
	must(t, os.WriteFile(passwd, []byte("root:x:0:0:root:/root:/bin/sh\nagent:x:1234:2345:agent:/home/agent:/bin/sh\n"), 0o644))
	must(t, os.WriteFile(group, []byte("root:x:0:\nagent:x:2345:\nextra:x:3456:agent\n"), 0o644))
	u, err := ResolveUser("agent", passwd, group)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, func(c *Config) {
		c.User = u
		c.UserCmd = []string{"sh", "-c", `echo "ids=$(id -u):$(id -g):$(id -G) home=$HOME pgid=$(cut -d' ' -f5 /proc/$$/stat) pid=$$"; exec sleep 60`}
	})
	c := ts.session(t)
	c.send(&clawkerdv1.Command{CommandId: "r", Payload: &clawkerdv1.Command_AgentReady{AgentReady: &clawkerdv1.AgentReady{}}})
	c.next("r")
	eventually(t, 10*time.Second, "user CMD output", func() bool { return strings.Contains(ts.console.String(), "pid=") })
	out := ts.console.String()
	if !strings.Contains(out, "ids=1234:2345:2345 3456") || !strings.Contains(out, "home=/home/agent") {
		t.Fatalf("user CMD identity: %q", out)
	}
	// Own process group: pgid == pid.
	var pgid, pid string
	for _, f := range strings.Fields(out) {
		if v, ok := strings.CutPrefix(f, "pgid="); ok {
			pgid = v
		}
		if v, ok := strings.CutPrefix(f, "pid="); ok {
			pid = v
		}
	}
	if pgid == "" || pgid != pid {
		t.Fatalf("user CMD not in its own process group: %q", out)
	}
}

func TestResolveUser(t *testing.T) {
	dir := t.TempDir()
	passwd, group := dir+"/passwd", dir+"/group"
	must(t, os.WriteFile(passwd, []byte("root:x:0:0::/root:/bin/sh\nbob:x:1000:1001::/home/bob:/bin/sh\n"), 0o644))
	must(t, os.WriteFile(group, []byte("root:x:0:\nbobs:x:1001:\nstaff:x:50:\n"), 0o644))
	for _, tc := range []struct {
		spec     string
		uid, gid int
	}{{"bob", 1000, 1001}, {"1000", 1000, 1001}, {"1000:50", 1000, 50}, {"bob:staff", 1000, 50}, {"4242", 4242, 0}} {
		u, err := ResolveUser(tc.spec, passwd, group)
		if err != nil || u.Uid != tc.uid || u.Gid != tc.gid {
			t.Fatalf("%s: %+v %v", tc.spec, u, err)
		}
	}
	for _, bad := range []string{"alice", "bob:nogroup"} {
		if _, err := ResolveUser(bad, passwd, group); err == nil {
			t.Fatalf("%s resolved", bad)
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestPeerPinnedAtTLSLayer: only the CP identity may open a Session; every
// other clawker cert (and a foreign CA) fails the handshake itself.
func TestPeerPinnedAtTLSLayer(t *testing.T) {
	ts := startServer(t, nil)
	now := time.Now()
	cli, err := ts.pki.ca.MintCLI(now)
	must(t, err)
	serverOnlyCP, err := ts.pki.ca.Mint(auth.LeafSpec{CommonName: consts.ControlPlaneCN, EKUs: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, now)
	must(t, err)
	foreign := newTestPKI(t) // another CA's CP cert
	cases := map[string]tls.Certificate{
		"agent-cert":      ts.pki.agent,
		"cli-cert":        testpki.TLSCert(cli),
		"cp-cn-no-client": testpki.TLSCert(serverOnlyCP),
		"foreign-ca-cp":   foreign.cp,
	}
	for name, cert := range cases {
		t.Run(name, func(t *testing.T) {
			// Raw TLS: the handshake must fail (TLS 1.3 reports the
			// server's alert on the first read).
			conn, err := tls.Dial("tcp", ts.addr, &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, NextProtos: []string{"h2"}})
			if err == nil {
				_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, err = conn.Read(make([]byte, 1))
				_ = conn.Close()
			}
			if err == nil || !strings.Contains(err.Error(), "tls:") {
				t.Fatalf("want TLS alert, got %v", err)
			}
			// And over gRPC the Session never reaches the handler.
			conn2 := ts.dial(t, cert)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stream, err := clawkerdv1.NewClawkerdServiceClient(conn2).Session(ctx)
			if err == nil {
				_, err = stream.Recv()
			}
			if err == nil {
				t.Fatal("Session opened with a non-CP cert")
			}
		})
	}
	if n := ts.srv.ActiveSessions(); n != 0 {
		t.Fatalf("%d sessions active", n)
	}
	// The CP cert itself works.
	if ack := ts.session(t).hello(); ack == nil {
		t.Fatal("CP session failed")
	}
}

// TestHalfDeadSessionDoesNotLockOut: a CP whose old stream stopped reading
// (its command's output is stuck in flow control) can still open a new
// Session and work; cancelling the old one kills its commands.
func TestHalfDeadSessionDoesNotLockOut(t *testing.T) {
	ts := startServer(t, nil)
	old := ts.session(t)
	// Flood output; the test never reads "flood", so the server blocks in Send.
	old.send(shell("flood", stages(stage("sh", "-c", "echo $$ > "+t.TempDir()+"/pid; exec cat /dev/zero"))))
	fresh := ts.session(t)
	if ack := fresh.hello(); ack == nil {
		t.Fatal("no HelloAck on the fresh session")
	}
	if res := fresh.run("x", stages(stage("echo", "works"))); trimLines(res.output) != "works" {
		t.Fatalf("fresh session: %q", res.output)
	}
	if n := ts.srv.ActiveSessions(); n != 2 {
		t.Fatalf("want 2 sessions, got %d", n)
	}
	old.close()
	eventually(t, 15*time.Second, "old session teardown", func() bool { return ts.srv.ActiveSessions() == 1 })
}

// TestSessionTransportLossKillsCommands: commands of a broken Session are
// killed and reaped.
func TestSessionTransportLossKillsCommands(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	pidFile := t.TempDir() + "/pid"
	c.send(shell("long", stages(stage("sh", "-c", "echo $$ > "+pidFile+"; exec sleep 600"))))
	c.next("long")
	var pid string
	eventually(t, 10*time.Second, "pid file", func() bool {
		b, _ := os.ReadFile(pidFile)
		pid = strings.TrimSpace(string(b))
		return pid != ""
	})
	c.close()
	eventually(t, 15*time.Second, "process gone", func() bool {
		_, err := os.Stat("/proc/" + pid)
		return os.IsNotExist(err)
	})
}

// TestHalfCloseLetsCommandsFinish: CloseSend from the CP is not a kill.
func TestHalfCloseLetsCommandsFinish(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	c.send(shell("a", stages(stage("sh", "-c", "sleep 0.3; echo finished"))))
	must(t, c.stream.CloseSend())
	res := c.collect("a")
	if res.done == nil || trimLines(res.output) != "finished" {
		t.Fatalf("%+v", res)
	}
}

func fdCount(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	must(t, err)
	return len(ents)
}

// TestNoLeaksAfter100Commands: goroutines and fds return to the baseline
// once a Session that ran 100 commands closes.
func TestNoLeaksAfter100Commands(t *testing.T) {
	ts := startServer(t, nil)
	// Warm-up so lazily created runtime/gRPC state is in the baseline.
	warm := ts.dial(t, ts.pki.cp)
	wc := openSession(t, warm)
	wc.run("w", stages(stage("true")))
	wc.close()
	_ = warm.Close()
	eventually(t, 10*time.Second, "warm-up session end", func() bool { return ts.srv.ActiveSessions() == 0 })

	baseFDs := fdCount(t)
	ignore := goleak.IgnoreCurrent()

	conn := ts.dial(t, ts.pki.cp)
	c := openSession(t, conn)
	for i := 0; i < 100; i++ {
		id := "n" + string(rune('0'+i%10)) + string(rune('0'+i/10))
		sc := stages(stage("sh", "-c", "cat; echo out; echo err >&2"), stage("cat"))
		sc.InitialStdin = []byte("in\n")
		c.send(shell(id, sc))
		if i%3 == 0 {
			c.send(&clawkerdv1.Command{CommandId: id, Payload: &clawkerdv1.Command_Signal{Signal: &clawkerdv1.Signal{Signo: 9}}})
		} else {
			c.send(&clawkerdv1.Command{CommandId: id, Payload: &clawkerdv1.Command_CloseStdin{CloseStdin: &clawkerdv1.CloseStdin{}}})
		}
		if res := c.collect(id); res.done == nil {
			t.Fatalf("%s: %+v", id, res.err)
		}
	}
	c.close()
	_ = conn.Close()
	eventually(t, 10*time.Second, "session end", func() bool { return ts.srv.ActiveSessions() == 0 })
	// A Session makes no gRPC client conns (clawkerd dials the CP only to
	// Register, and this server has no CP); a reconnecting client conn of
	// an earlier test in the package can start one after the baseline.
	goleak.VerifyNone(t, ignore, goleak.IgnoreTopFunction("google.golang.org/grpc.(*addrConn).resetTransportAndUnlock"))
	eventually(t, 10*time.Second, "fd count back to baseline", func() bool { return fdCount(t) <= baseFDs })
}
