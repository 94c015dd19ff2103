package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv"
)

// stdinE2EBytes is how much TestExecStdinPaced pipes: 256 MiB by default
// (64 times the 4 MiB backlog that killed the command before stdin
// credit); CLAWKER_STDIN_BYTES=1073741824 for the 1 GiB.
func stdinE2EBytes(t *testing.T) int64 {
	n := int64(256 << 20)
	if v := os.Getenv("CLAWKER_STDIN_BYTES"); v != "" {
		var err error
		if n, err = strconv.ParseInt(v, 10, 64); err != nil || n <= 0 {
			t.Fatalf("CLAWKER_STDIN_BYTES=%q", v)
		}
	}
	return n
}

// procMem reads VmRSS and VmHWM (peak RSS) in KiB of a container's main
// process through the host's /proc.
func procMem(t *testing.T, containerID string) (rss, hwm int64) {
	t.Helper()
	res, err := suite.docker.ContainerInspect(context.Background(), containerID, mobyclient.ContainerInspectOptions{})
	if err != nil || res.Container.State == nil {
		t.Fatalf("inspect %s: %v", containerID, err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", res.Container.State.Pid))
	if err != nil {
		testenv.Unavailable(t, "container processes not visible in /proc (remote engine?): %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "VmRSS:" {
			rss, _ = strconv.ParseInt(f[1], 10, 64)
		}
		if len(f) >= 2 && f[0] == "VmHWM:" {
			hwm, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return rss, hwm
}

// repeatReader yields an endless stream of "y\n".
type repeatReader struct{}

func (repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = "y\n"[i%2]
	}
	return len(p), nil
}

// Issue 15 §1 on the real engine: far more than the old 4 MiB backlog
// through `clawker exec -i … -- wc -c` arrives whole, and neither the CP
// nor clawkerd grows with the volume (peak RSS printed and bounded).
func TestExecStdinPaced(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	id := strings.TrimSpace(e.must("run", "-d", "--project", "pipe", "--agent", "wc", agentImage, "sleep", "3600").stdout)
	eventually(t, 90*time.Second, "agent ready", func() error {
		if r := e.clawker("exec", "--project", "pipe", "wc", "--", "true"); r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
	cpRSS0, _ := procMem(t, consts.ControlPlaneContainer)
	agRSS0, _ := procMem(t, id)

	total := stdinE2EBytes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(suite.binDir, "clawker"), "exec", "-i", "--project", "pipe", "wc", "--", "wc", "-c")
	cmd.Env = append(os.Environ(), consts.EnvHome+"="+e.home, "CLAWKER_LABELS="+testLabel)
	cmd.Stdin = io.LimitReader(repeatReader{}, total)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("exec -i wc -c: %v\nstdout %s\nstderr %s", err, out.String(), errb.String())
	}
	if got := strings.TrimSpace(out.String()); got != strconv.FormatInt(total, 10) {
		t.Fatalf("wc -c counted %q, want %d (stderr %s)", got, total, errb.String())
	}
	cpRSS1, cpHWM := procMem(t, consts.ControlPlaneContainer)
	agRSS1, agHWM := procMem(t, id)
	t.Logf("stdin: %d MiB through clawker exec -i … wc -c in %s (%.0f MiB/s); CP RSS %d→%d KiB (peak %d), clawkerd RSS %d→%d KiB (peak %d)",
		total>>20, took.Round(time.Millisecond), float64(total)/(1<<20)/took.Seconds(), cpRSS0, cpRSS1, cpHWM, agRSS0, agRSS1, agHWM)
	// Buffering the input anywhere would cost a multiple of the window; a
	// process that grew with the volume would pass these bounds by far.
	const boundKiB = 96 << 10
	if cpHWM-cpRSS0 > boundKiB || agHWM-agRSS0 > boundKiB {
		t.Fatalf("memory grew with the input: CP peak %d KiB from %d, clawkerd peak %d KiB from %d", cpHWM, cpRSS0, agHWM, agRSS0)
	}
}

// agentSession is the Session column of `clawker agents` for id.
func (e *env) agentSession(id string) string {
	row, _ := findAgent(e.agents(), id)
	return row.Session
}

// Issue 15 §4 on the real engine: after `docker network disconnect` of
// every network the agent is on (whatever their names), `clawker agents`
// stops saying connected within 3 s and an exec fails at once instead of
// hanging; after `docker network connect`, an exec succeeds within 2 s.
func TestSessionNetworkDisconnectHeals(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	id := strings.TrimSpace(e.must("run", "-d", "--project", "net", "--agent", "cut", agentImage, "sleep", "3600").stdout)
	eventually(t, 90*time.Second, "agent ready", func() error {
		if r := e.clawker("exec", "--project", "net", "cut", "--", "true"); r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
	ctx := context.Background()
	res, err := suite.docker.ContainerInspect(ctx, id, mobyclient.ContainerInspectOptions{})
	if err != nil || res.Container.NetworkSettings == nil {
		t.Fatalf("inspect: %v", err)
	}
	var nets []string
	for name := range res.Container.NetworkSettings.Networks {
		nets = append(nets, name)
	}
	if len(nets) == 0 {
		t.Fatal("agent on no network")
	}

	cut := time.Now()
	for _, n := range nets {
		if _, err := suite.docker.NetworkDisconnect(ctx, n, mobyclient.NetworkDisconnectOptions{Container: id}); err != nil {
			t.Fatalf("disconnect %s: %v", n, err)
		}
	}
	var state string
	eventually(t, 30*time.Second, "session leaves connected", func() error {
		if state = e.agentSession(id); state == "connected" {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	detect := time.Since(cut)
	t0 := time.Now()
	r := e.clawker("exec", "--project", "net", "cut", "--", "true")
	failFast := time.Since(t0)
	if r.code == 0 {
		t.Fatalf("exec without a path succeeded: %s", r)
	}

	healed := time.Now()
	for _, n := range nets {
		if _, err := suite.docker.NetworkConnect(ctx, n, mobyclient.NetworkConnectOptions{Container: id}); err != nil {
			t.Fatalf("connect %s: %v", n, err)
		}
	}
	r = e.clawker("exec", "--wait", "30s", "--project", "net", "cut", "--", "echo", "healed")
	recovery := time.Since(healed)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "healed" {
		t.Fatalf("exec after reconnect: %s", r)
	}
	t.Logf("network %v: detection %s (state %q), exec without a Session failed in %s, exec after reconnect succeeded %s after connect",
		nets, detect.Round(time.Millisecond), state, failFast.Round(time.Millisecond), recovery.Round(time.Millisecond))
	if detect > 3*time.Second {
		t.Errorf("dead path seen after %s, want ≤ 3s", detect)
	}
	if recovery > 2*time.Second {
		t.Errorf("exec after reconnect took %s, want < 2s", recovery)
	}
}
