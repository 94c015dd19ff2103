package soak

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
)

// TestClawkerdUserCmdCrash: the user CMD exiting non-zero or dying on a
// signal ends the container with that code (128+signo when signalled).
func TestClawkerdUserCmdCrash(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	ctx := context.Background()
	cases := map[string]struct {
		script string
		want   int
	}{
		"exit42":  {"exit 42", 42},
		"segv":    {"kill -SEGV $$", 139},
		"killed9": {"kill -KILL $$", 137},
	}
	ids := map[string]string{}
	for name, c := range cases {
		id, err := e.run("faults", name, "sh", "-c", c.script)
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = id
	}
	for name, c := range cases {
		var code int
		eventually(t, 2*time.Minute, name+" container exits", func() error {
			st, err := inspectState(ctx, ids[name])
			if err != nil {
				return err
			}
			if st.Running {
				return errors.New("still running")
			}
			code = st.ExitCode
			return nil
		})
		if code != c.want {
			t.Errorf("%s: container exit code %d, want %d", name, code, c.want)
		}
		t.Logf("user CMD %q: container exit code %d", c.script, code)
	}
}

// TestClawkerdFaults puts one agent through the faults clawkerd must
// survive: the CP killed in the middle of a command, a command that never
// reads its stdin fed more than any pipe holds, and a large output drained
// by a fast and by a slow reader. After each, clawkerd (PID 1) is still up, the agent
// answers, exit codes are right, and its memory stays bounded.
func TestClawkerdFaults(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	ctx := context.Background()
	id, err := e.run("faults", "worker", "sleep", "3600")
	if err != nil {
		t.Fatal(err)
	}
	waitConnected := func(what string) {
		t.Helper()
		eventually(t, 2*time.Minute, what, func() error {
			live, err := liveAgents(ctx)
			if err != nil {
				return err
			}
			rows, err := e.agentsErr()
			if err != nil {
				return err
			}
			if !live[id] {
				return errors.New("agent container not running")
			}
			return checkRegistryMatchesLive(rows, live)
		})
	}
	waitConnected("agent registered and connected")
	alive := func(what string) {
		t.Helper()
		r := e.clawker("exec", "--project", "faults", "worker", "--", "sh", "-c", "echo alive; exit 5")
		if r.Code != 5 || !strings.Contains(r.Stdout, "alive") {
			t.Fatalf("%s: exec after: want exit 5 and output, got %s", what, r)
		}
		st, err := inspectState(ctx, id)
		if err != nil || !st.Running {
			t.Fatalf("%s: agent container not running: %v %+v", what, err, st)
		}
	}

	t.Run("CPVanishesMidCommand", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		cmd := e.command(cctx, "exec", "--project", "faults", "worker", "--", "sh", "-c", "touch /tmp/mid-started; sleep 30; echo late")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Minute, "the command started in the agent", func() error {
			_, err := containerFile(ctx, id, "/tmp/mid-started")
			return err
		})
		if _, err := suite.docker.ContainerKill(ctx, consts.ControlPlaneContainer, mobyclient.ContainerKillOptions{Signal: "KILL"}); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 || strings.Contains(out.String(), "late") {
			t.Fatalf("exec through a CP that died: want a non-zero exit before the command ends, got %v\n%s", err, out.String())
		}
		st, err := inspectState(ctx, id)
		if err != nil || !st.Running {
			t.Fatalf("agent died with the CP: %v %+v", err, st)
		}
		t.Logf("CP killed mid-command: exec exited %d; agent still running", ee.ExitCode())
		eventually(t, 30*time.Second, "CP started again", func() error {
			_, err := suite.docker.ContainerStart(ctx, consts.ControlPlaneContainer, mobyclient.ContainerStartOptions{})
			if err == nil {
				return nil
			}
			if st, ierr := inspectState(ctx, consts.ControlPlaneContainer); ierr == nil && st.Running {
				return nil
			}
			return err
		})
		e.waitReady(90 * time.Second)
		waitConnected("agent reconnected after the CP came back")
		alive("CP vanished mid-command")
	})

	t.Run("CommandNeverReadsStdin", func(t *testing.T) {
		// A command that never reads runs to its end, whatever the size:
		// with the stdin credit window the producer is paced rather than
		// the command SIGKILLed (the backlog kill is left for a peer that
		// ignores credits, unit-tested in clawkerd). clawkerd stays up.
		for _, c := range []struct {
			size     int
			argv     []string
			wantCode int
			wantErr  string
		}{
			{1 << 20, []string{"sleep", "2"}, 0, ""},
			{1 << 20, []string{"true"}, 0, ""},
			{16 << 20, []string{"sleep", "3"}, 0, ""},
		} {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			cmd := e.command(cctx, append([]string{"exec", "-i", "--project", "faults", "worker", "--"}, c.argv...)...)
			cmd.Stdin = bytes.NewReader(make([]byte, c.size))
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err := cmd.Run()
			cancel()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != c.wantCode || !strings.Contains(out.String(), c.wantErr) {
				t.Fatalf("exec -i %v with %d MiB of stdin it never reads: want exit %d %q, got %d\n%s",
					c.argv, c.size>>20, c.wantCode, c.wantErr, code, out.String())
			}
			t.Logf("exec -i %v, %d MiB unread stdin: exit %d in %s", c.argv, c.size>>20, code, time.Since(start).Round(time.Millisecond))
			alive("command never reads stdin")
		}
	})

	size := int64(256 << 20)
	if long() {
		size = 1 << 30
	}
	// bigOutput runs a command writing size bytes and exiting 3, drained
	// by read (which pauses between reads when slow), and returns the bytes
	// delivered and the peak memory of the agent and the CP.
	bigOutput := func(t *testing.T, slow bool) (int64, map[string]uint64) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		cmd := e.command(cctx, "exec", "--project", "faults", "worker", "--", "sh", "-c", fmt.Sprintf("head -c %d /dev/zero; exit 3", size))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		peaks := newMemSampler(ctx, map[string]string{"agent": id, "cp": cpContainerID(ctx, t)})
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var n int64
		buf := make([]byte, 32<<10)
		for {
			k, err := stdout.Read(buf)
			n += int64(k)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if slow {
				time.Sleep(time.Millisecond)
			}
		}
		err = cmd.Wait()
		elapsed := time.Since(start)
		peak := peaks.stop()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("%d MiB output: want exit 3, got %v\n%s", size>>20, err, stderr.String())
		}
		const bound = 256 << 20
		for who, p := range peak {
			if p > bound {
				t.Errorf("%s memory peaked at %.1f MiB while relaying %d MiB: unbounded buffering", who, float64(p)/(1<<20), size>>20)
			}
		}
		t.Logf("%d MiB output, slow reader=%v: %d MiB delivered in %s (%.1f MiB/s), exit 3; peak memory agent %.1f MiB, CP %.1f MiB (bound %d MiB)",
			size>>20, slow, n>>20, elapsed.Round(time.Millisecond), float64(n)/(1<<20)/elapsed.Seconds(),
			float64(peak["agent"])/(1<<20), float64(peak["cp"])/(1<<20), bound>>20)
		alive("large output")
		return n, peak
	}

	// Output is flow-controlled end to end (clawkerd → CP → admin stream
	// → CLI → the reader): whatever the reader's pace, every byte arrives,
	// the exit code is right, memory stays bounded and clawkerd stays up
	// (the last three checked in bigOutput).
	for _, c := range []struct {
		name string
		slow bool
	}{{"LargeOutputFastReader", false}, {"LargeOutputSlowReader", true}} {
		t.Run(c.name, func(t *testing.T) {
			if n, _ := bigOutput(t, c.slow); n != size {
				logs := e.clawker("cp", "logs")
				t.Errorf("reader got %d bytes of %d (CP log mentions agent_exec_output_dropped: %v)",
					n, size, strings.Contains(logs.Stdout+logs.Stderr, "agent_exec_output_dropped"))
			}
		})
	}
}

func inspectState(ctx context.Context, id string) (*container.State, error) {
	res, err := suite.docker.ContainerInspect(ctx, id, mobyclient.ContainerInspectOptions{})
	if err != nil {
		return nil, err
	}
	if res.Container.State == nil {
		return nil, errors.New("no state")
	}
	return res.Container.State, nil
}

func cpContainerID(ctx context.Context, t *testing.T) string {
	t.Helper()
	res, err := suite.docker.ContainerInspect(ctx, consts.ControlPlaneContainer, mobyclient.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res.Container.ID
}

// memSampler records the peak memory usage (docker stats) of containers
// until stopped.
type memSampler struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	peak   map[string]uint64
}

func newMemSampler(ctx context.Context, ids map[string]string) *memSampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &memSampler{cancel: cancel, peak: map[string]uint64{}}
	for who, id := range ids {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for ctx.Err() == nil {
				u, err := memUsage(ctx, id)
				if err == nil {
					s.mu.Lock()
					s.peak[who] = max(s.peak[who], u)
					s.mu.Unlock()
				}
			}
		}()
	}
	return s
}

func (s *memSampler) stop() map[string]uint64 {
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// memUsage is one docker stats sample: memory usage minus the page cache,
// as `docker stats` shows it.
func memUsage(ctx context.Context, id string) (uint64, error) {
	res, err := suite.docker.ContainerStats(ctx, id, mobyclient.ContainerStatsOptions{})
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	var st container.StatsResponse
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		return 0, err
	}
	u := st.MemoryStats.Usage
	for _, k := range []string{"total_inactive_file", "inactive_file"} {
		if v, ok := st.MemoryStats.Stats[k]; ok && v < u {
			return u - v, nil
		}
	}
	return u, nil
}
