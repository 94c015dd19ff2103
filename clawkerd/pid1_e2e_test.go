package clawkerd

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	dockerclient "github.com/moby/moby/client"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

func TestPID1InContainer(t *testing.T) {
	cli := dockerClient(t)
	sweep(t, cli)
	image := e2eImage(t, cli)
	registerImageCleanup(t, cli, image)
	pki := newTestPKI(t)
	id := startAgent(t, cli, image, pki, []string{"sleep", "1000"})

	c, ack := agentSession(t, cli, id, pki)
	if ack.GetInitialized() || ack.GetCmdRunning() {
		t.Fatalf("fresh container HelloAck %v", ack)
	}
	// What the CP's init plan runs on instead of probing: root from the
	// image's passwd, /bin/sh (a busybox symlink) present, nothing staged.
	if u := ack.GetUser(); u == nil || u.GetUid() != 0 || u.GetGid() != 0 || u.GetHome() != "/root" ||
		ack.GetNoShell() || ack.GetStaged() == nil || len(ack.GetStaged().GetPaths()) != 0 {
		t.Fatalf("fresh container HelloAck %v: want user 0:0:/root, a shell, an empty staging listing", ack)
	}
	if res := c.run("pid", stages(stage("sh", "-c", "cat /proc/1/comm"))); trimLines(res.output) != "clawkerd" {
		t.Fatalf("PID 1 is %q", res.output)
	}

	// An orphaned grandchild is reparented to PID 1 and must be reaped.
	res := c.run("orphan", stages(stage("sh", "-c", "(sleep 0.3; touch /tmp/orphan-done) & exit 0")))
	if res.done == nil {
		t.Fatalf("orphan command: %+v", res)
	}
	check := `test -e /tmp/orphan-done || exit 1; sleep 0.1; if grep -qs '^State:[[:space:]]*Z' /proc/[0-9]*/status; then exit 2; fi; echo clean`
	var last string
	for i := 0; ; i++ {
		r := c.run(fmt.Sprintf("zcheck%d", i), stages(stage("sh", "-c", check)))
		last = trimLines(r.output)
		if last == "clean" {
			break
		}
		if i > 100 {
			zs := c.run("zlist", stages(stage("sh", "-c", "grep -l '^State:[[:space:]]*Z' /proc/[0-9]*/status; ps")))
			t.Fatalf("zombie or orphan never finished (last %q): %s", last, zs.output)
		}
	}

	for _, cmd := range []*clawkerdv1.Command{
		{CommandId: "init", Payload: &clawkerdv1.Command_AgentInitialized{AgentInitialized: &clawkerdv1.AgentInitialized{}}},
		{CommandId: "ready", Payload: &clawkerdv1.Command_AgentReady{AgentReady: &clawkerdv1.AgentReady{}}},
	} {
		c.send(cmd)
		if r := c.next(cmd.GetCommandId()); r.GetDone() == nil {
			t.Fatalf("%s: %v", cmd.GetCommandId(), r)
		}
	}
	if ack := c.hello(); !ack.GetInitialized() || !ack.GetCmdRunning() {
		t.Fatalf("after init+ready: %v", ack)
	}

	timeout := 20
	if _, err := cli.ContainerStop(context.Background(), id, dockerclient.ContainerStopOptions{Timeout: &timeout}); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if running, code := inspectExit(t, cli, id); running || code != 143 {
		t.Fatalf("after docker stop: running=%v exit=%d, want 143", running, code)
	}

	if _, err := cli.ContainerStart(context.Background(), id, dockerclient.ContainerStartOptions{}); err != nil {
		t.Fatalf("restart: %v", err)
	}
	_, ack = agentSession(t, cli, id, pki)
	if !ack.GetInitialized() || ack.GetCmdRunning() {
		t.Fatalf("after stop/start HelloAck %v, want initialized=true cmd_running=false", ack)
	}
}

// TestPID1SigtermBeforeReady: docker stop before AgentReady exits promptly.
func TestPID1SigtermBeforeReady(t *testing.T) {
	cli := dockerClient(t)
	image := e2eImage(t, cli)
	registerImageCleanup(t, cli, image)
	pki := newTestPKI(t)
	id := startAgent(t, cli, image, pki, []string{"sleep", "1000"})
	agentSession(t, cli, id, pki)
	timeout := 30
	start := time.Now()
	if _, err := cli.ContainerStop(context.Background(), id, dockerclient.ContainerStopOptions{Timeout: &timeout}); err != nil {
		t.Fatalf("stop: %v", err)
	}
	// Exit code 143 (not 137) proves clawkerd exited on SIGTERM rather
	// than being SIGKILLed after the timeout.
	if _, code := inspectExit(t, cli, id); code != 143 {
		t.Fatalf("exit %d, want 143", code)
	}
	t.Logf("stop took %v", time.Since(start))
}

// BenchmarkContainer compares a ShellCommand over a real TLS Session into
// a container with docker exec of the same command in the same container.
func BenchmarkContainer(b *testing.B) {
	cli := dockerClient(b)
	sweep(b, cli)
	image := e2eImage(b, cli)
	registerImageCleanup(b, cli, image)
	pki := newTestPKI(b)
	id := startAgent(b, cli, image, pki, []string{"sleep", "1000"})
	c, _ := agentSession(b, cli, id, pki)
	const size = 8 << 20
	sessionRun := func(b *testing.B, argv ...string) int {
		b.Helper()
		res := c.run(fmt.Sprintf("b%d", time.Now().UnixNano()), stages(stage(argv...)))
		if res.done == nil {
			b.Fatalf("%+v", res.err)
		}
		return len(res.output)
	}
	dockerExec := func(b *testing.B, argv ...string) int {
		b.Helper()
		ctx := context.Background()
		ex, err := cli.ExecCreate(ctx, id, dockerclient.ExecCreateOptions{Cmd: argv, AttachStdout: true, AttachStderr: true})
		if err != nil {
			b.Fatal(err)
		}
		att, err := cli.ExecAttach(ctx, ex.ID, dockerclient.ExecAttachOptions{})
		if err != nil {
			b.Fatal(err)
		}
		defer att.Close()
		n, err := stdcopy.StdCopy(io.Discard, io.Discard, att.Reader)
		if err != nil {
			b.Fatal(err)
		}
		return int(n)
	}
	b.Run("roundtrip/session", func(b *testing.B) {
		for b.Loop() {
			sessionRun(b, "true")
		}
	})
	b.Run("roundtrip/docker-exec", func(b *testing.B) {
		for b.Loop() {
			dockerExec(b, "true")
		}
	})
	b.Run("throughput/session", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			if n := sessionRun(b, "head", "-c", fmt.Sprint(size), "/dev/zero"); n != size {
				b.Fatalf("got %d", n)
			}
		}
	})
	b.Run("throughput/docker-exec", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			if n := dockerExec(b, "head", "-c", fmt.Sprint(size), "/dev/zero"); n != size {
				b.Fatalf("got %d", n)
			}
		}
	})
}
