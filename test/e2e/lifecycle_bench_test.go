package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
)

// BenchmarkLifecycleStart measures issue 5's numbers on the real engine,
// for 1 and for 50 agents started together (`clawker run -d` in parallel):
//
//   - start→connected: container StartedAt → session_connected
//   - start→init: container StartedAt → init_completed
//   - plan: session_connected → init_completed (Register + init plan)
//   - exec-anchor: the same init commands (taken from clawkerd's log of
//     what it ran) run one after another through `docker exec` in the
//     same containers, in the same run; ratio = plan / exec-anchor
//   - CP memory per live Session: the CP's RSS and Go heap (from
//     /metrics) before and with the agents connected, over their count
//
// Numbers only, never a pass/fail. A round starts a fresh set of agents,
// so run it once:
//
//	flock /tmp/clawker-docker.lock go test -run '^$' -bench BenchmarkLifecycleStart -benchtime 1x ./test/e2e/
func BenchmarkLifecycleStart(b *testing.B) {
	if suite.skip != "" {
		b.Skip(suite.skip)
	}
	c := &benchCLI{tb: b, home: b.TempDir()}
	b.Cleanup(func() { suite.env.Sweep(context.Background(), true) })
	c.must("init")
	c.must("cp", "up", "--wait", "90s")
	var st struct {
		HealthAddr string `json:"health_addr"`
	}
	if err := json.Unmarshal([]byte(c.must("cp", "status", "-o", "json")), &st); err != nil || st.HealthAddr == "" {
		b.Fatalf("cp status: %v", err)
	}
	metricsURL := "http://" + st.HealthAddr + "/metrics"

	for _, n := range []int{1, 50} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				benchRound(b, c, metricsURL, n, i)
			}
		})
	}
}

// benchRound starts n agents together, waits for all to finish init,
// reports the timings and memory, then removes them.
func benchRound(b *testing.B, c *benchCLI, metricsURL string, n, round int) {
	ctx := context.Background()
	project := fmt.Sprintf("bench%d-%d", n, round)
	before := scrapeMem(b, metricsURL)
	ev := c.follow("events", "-f", "--since", "0", "--project", project, "-o", "json",
		"--type", "session_connected", "--type", "init_completed")

	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for k := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := c.run("run", "-d", "--project", project, "--agent", fmt.Sprintf("a%d", k), agentImage, "sleep", "3600")
			if err != nil {
				errs <- err
				return
			}
			ids[k] = strings.TrimSpace(out)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	defer func() {
		for _, id := range ids {
			_, _ = suite.docker.ContainerRemove(ctx, id, mobyclient.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		}
	}()

	deadline := time.Now().Add(5 * time.Minute)
	for {
		all := true
		for _, id := range ids {
			if indexOf(ev.events(id), "init_completed") < 0 {
				all = false
				break
			}
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("not every agent reached init_completed within 5m")
		}
		time.Sleep(100 * time.Millisecond)
	}
	ev.stop()
	with := scrapeMem(b, metricsURL)

	var toConn, toInit, plan []time.Duration
	for _, id := range ids {
		res, err := suite.docker.ContainerInspect(ctx, id, mobyclient.ContainerInspectOptions{})
		if err != nil {
			b.Fatal(err)
		}
		started, err := time.Parse(time.RFC3339Nano, res.Container.State.StartedAt)
		if err != nil {
			b.Fatalf("StartedAt %q: %v", res.Container.State.StartedAt, err)
		}
		evs := ev.events(id)
		conn, done := evs[indexOf(evs, "session_connected")].Time, evs[indexOf(evs, "init_completed")].Time
		toConn = append(toConn, conn.Sub(started))
		toInit = append(toInit, done.Sub(started))
		plan = append(plan, done.Sub(conn))
	}

	// The anchor: every agent's init commands through docker exec, all
	// agents at once as their Sessions were.
	anchor := make([]time.Duration, n)
	errs = make(chan error, n)
	for k, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := execInitCommands(ctx, id)
			if err != nil {
				errs <- err
				return
			}
			anchor[k] = d
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}

	sessions := with.sessions - before.sessions
	b.ReportMetric(ms(median(toConn)), "start→connected-ms")
	b.ReportMetric(ms(median(toInit)), "start→init-ms")
	b.ReportMetric(ms(median(plan)), "plan-ms")
	b.ReportMetric(ms(median(anchor)), "exec-anchor-ms")
	b.ReportMetric(float64(median(plan))/float64(median(anchor)), "plan/exec")
	if sessions > 0 {
		b.ReportMetric((with.rss-before.rss)/sessions/1024, "rss-KiB/session")
		b.ReportMetric((with.heap-before.heap)/sessions/1024, "heap-KiB/session")
	}
	b.Logf("agents=%d: start→connected p50 %v max %v; start→init p50 %v max %v; plan p50 %v; "+
		"docker exec of the same steps p50 %v (plan/exec %.2f); CP +%.0f KiB RSS, +%.0f KiB heap for %.0f Sessions",
		n, median(toConn), slices.Max(toConn), median(toInit), slices.Max(toInit), median(plan),
		median(anchor), float64(median(plan))/float64(median(anchor)),
		(with.rss-before.rss)/1024, (with.heap-before.heap)/1024, sessions)
}

// execInitCommands replays, through docker exec, the init shell commands
// clawkerd logged for this container's first plan run, and returns their
// total wall time.
func execInitCommands(ctx context.Context, id string) (time.Duration, error) {
	cmds, err := loggedInitCommands(ctx, id)
	if err != nil {
		return 0, err
	}
	if len(cmds) == 0 {
		return 0, fmt.Errorf("%s: no init commands in its log", id[:12])
	}
	start := time.Now()
	for _, c := range cmds {
		cr, err := suite.docker.ExecCreate(ctx, id, mobyclient.ExecCreateOptions{
			Cmd: c.Argv, WorkingDir: c.Cwd, User: fmt.Sprintf("%d:%d", c.UID, c.GID),
			AttachStdout: true, AttachStderr: true,
		})
		if err != nil {
			return 0, fmt.Errorf("exec create %s: %w", c.ID, err)
		}
		at, err := suite.docker.ExecAttach(ctx, cr.ID, mobyclient.ExecAttachOptions{})
		if err != nil {
			return 0, fmt.Errorf("exec start %s: %w", c.ID, err)
		}
		_, _ = io.Copy(io.Discard, at.Reader)
		at.Close()
		ins, err := suite.docker.ExecInspect(ctx, cr.ID, mobyclient.ExecInspectOptions{})
		if err != nil {
			return 0, err
		}
		if ins.ExitCode != 0 {
			return 0, fmt.Errorf("exec %s: exit %d", c.ID, ins.ExitCode)
		}
	}
	return time.Since(start), nil
}

// loggedCommand is one shell_command_started line of clawkerd's log.
type loggedCommand struct {
	Event string   `json:"event"`
	ID    string   `json:"command_id"`
	Argv  []string `json:"argv"`
	Cwd   string   `json:"cwd"`
	UID   uint32   `json:"uid"`
	GID   uint32   `json:"gid"`
}

func loggedInitCommands(ctx context.Context, id string) ([]loggedCommand, error) {
	rc, err := suite.docker.ContainerLogs(ctx, id, mobyclient.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil {
		return nil, err
	}
	var cmds []loggedCommand
	sc := bufio.NewScanner(&out)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		var lc loggedCommand
		if json.Unmarshal(sc.Bytes(), &lc) == nil && lc.Event == "shell_command_started" && strings.HasPrefix(lc.ID, "init/") {
			cmds = append(cmds, lc)
		}
	}
	return cmds, sc.Err()
}

// cpMem is what /metrics says about the CP's memory and Sessions.
type cpMem struct{ rss, heap, sessions float64 }

func scrapeMem(tb testing.TB, url string) cpMem {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	body := string(raw)
	var m cpMem
	for _, l := range strings.Split(body, "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "process_resident_memory_bytes":
			m.rss = v
		case "go_memstats_heap_inuse_bytes":
			m.heap = v
		case `clawker_cp_sessions{state="connected"}`:
			m.sessions = v
		}
	}
	return m
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// benchCLI runs the CLI for a benchmark (env is *testing.T-only).
type benchCLI struct {
	tb   testing.TB
	home string
}

func (c *benchCLI) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(suite.binDir, "clawker"), args...)
	cmd.Env = append(os.Environ(), consts.EnvHome+"="+c.home, "CLAWKER_LABELS="+testLabel)
	return cmd
}

// run is safe for concurrent use; it returns stdout, or an error
// carrying the output on a non-zero exit.
func (c *benchCLI) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := c.command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("clawker %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), nil
}

func (c *benchCLI) must(args ...string) string {
	c.tb.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.tb.Fatal(err)
	}
	return out
}

// follow starts a long-running CLI (events -f) collecting its lines.
func (c *benchCLI) follow(args ...string) *bg {
	c.tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := c.command(ctx, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.tb.Fatal(err)
	}
	b := &bg{cmd: cmd, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			b.mu.Lock()
			b.lines = append(b.lines, sc.Text())
			b.mu.Unlock()
		}
	}()
	c.tb.Cleanup(b.stop) // stopping twice is harmless
	return b
}
