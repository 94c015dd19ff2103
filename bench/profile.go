package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cpProfile is one CP profile taken through the operator-only admin RPC
// (`clawker cp profile`) while the bench repeated one figure's workload.
type cpProfile struct {
	Name     string   `json:"name"`
	Kind     string   `json:"kind"`
	Workload string   `json:"workload"`
	File     string   `json:"file"`
	Top      []string `json:"top,omitempty"` // `go tool pprof -top` rows, heaviest first
	Error    string   `json:"error,omitempty"`
}

// profileTopRows is how many pprof -top rows the report keeps per profile.
const profileTopRows = 12

// profileWhile takes a CPU profile of the CP for d while work runs in a
// loop, so the profile holds that workload and nothing else. work is
// called until the profile has ended; its errors end the pass.
func (e *env) profileWhile(ctx context.Context, dir, name, workload string, d time.Duration, work func() error) cpProfile {
	p := cpProfile{Name: name, Kind: "cpu", Workload: workload, File: name + ".cpu.pprof"}
	out, summary := profilePaths(dir, p.File)
	done := make(chan error, 1)
	go func() {
		_, err := e.must(ctx, "cp", "profile", "--kind", "cpu",
			"--seconds", strconv.Itoa(int(d/time.Second)), "-o", out)
		done <- err
	}()
	for {
		select {
		case err := <-done:
			return finishProfile(ctx, p, out, summary, err)
		default:
		}
		if err := work(); err != nil {
			<-done
			p.Error = err.Error()
			return p
		}
	}
}

// heapProfile takes a heap profile of the CP now.
func (e *env) heapProfile(ctx context.Context, dir, name, workload string) cpProfile {
	p := cpProfile{Name: name, Kind: "heap", Workload: workload, File: name + ".heap.pprof"}
	out, summary := profilePaths(dir, p.File)
	_, err := e.must(ctx, "cp", "profile", "--kind", "heap", "-o", out)
	return finishProfile(ctx, p, out, summary, err)
}

// profileRestart restarts the CP once more and profiles its CPU from the
// moment its admin API answers: the profile request is retried while
// `cp up` runs, so figure 2's reconnect burst is in it, while the timed
// restarts ran unprofiled.
func (e *env) profileRestart(ctx context.Context, dir string, n int) cpProfile {
	p := cpProfile{Name: "cp-fanout", Kind: "cpu", File: "cp-fanout.cpu.pprof",
		Workload: fmt.Sprintf("a CP restart with %d agents running, from its admin API's first answer", n)}
	out, summary := profilePaths(dir, p.File)
	if _, err := e.must(ctx, "cp", "down"); err != nil {
		p.Error = err.Error()
		return p
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		// Every 100 ms: each try is a CLI process, load on the restart
		// being profiled.
		done <- waitFor(pctx, time.Minute, 100*time.Millisecond, "the CP's admin API", func() error {
			_, err := e.must(pctx, "cp", "profile", "--kind", "cpu", "--seconds", "3", "-o", out)
			return err
		})
	}()
	if _, err := e.must(ctx, "cp", "up"); err != nil {
		cancel()
		<-done
		p.Error = err.Error()
		return p
	}
	return finishProfile(ctx, p, out, summary, <-done)
}

// rawProfileDir is the subdirectory of -profile that holds the raw pprof
// files: git ignores it, only the text summaries beside it are committed.
const rawProfileDir = "raw"

// profilePaths is where profile file goes under dir: the raw profile in
// rawProfileDir, its `-top` summary (name.top.txt) in dir itself.
func profilePaths(dir, file string) (raw, summary string) {
	return filepath.Join(dir, rawProfileDir, file), filepath.Join(dir, strings.TrimSuffix(file, ".pprof")+".top.txt")
}

func finishProfile(ctx context.Context, p cpProfile, out, summary string, err error) cpProfile {
	if err != nil {
		p.Error = err.Error()
		return p
	}
	top, err := pprofTop(ctx, out, p.Kind)
	if err != nil {
		p.Error = err.Error()
		return p
	}
	p.Top = top
	_ = os.WriteFile(summary, []byte(strings.Join(top, "\n")+"\n"), 0o644)
	return p
}

// pprofTop renders the profile's heaviest functions with `go tool pprof`.
// Heap profiles rank by bytes in use, the figure the memory target is on.
func pprofTop(ctx context.Context, file, kind string) ([]string, error) {
	args := []string{"tool", "pprof", "-top", "-nodecount=" + strconv.Itoa(profileTopRows)}
	if kind == "heap" {
		args = append(args, "-sample_index=inuse_space")
	}
	out, err := exec.CommandContext(ctx, "go", append(args, file)...).Output()
	if err != nil {
		return nil, fmt.Errorf("go tool pprof %s: %w", file, err)
	}
	var rows []string
	started := false
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "flat") {
			started = true
		}
		if started && strings.TrimSpace(l) != "" {
			rows = append(rows, strings.TrimRight(l, " "))
		}
		if !started && (strings.HasPrefix(l, "Duration:") || strings.HasPrefix(l, "Showing nodes")) {
			rows = append(rows, strings.TrimSpace(l))
		}
	}
	return rows, nil
}

// profilePass is how long each CP CPU profile runs.
const profilePass = 10 * time.Second

// profileReady profiles the CP while agents are started one at a time,
// each waited on to InitCompleted (figure 1's workload), then removes them.
func (e *env) profileReady(ctx context.Context, w *evWatch, dir string) cpProfile {
	var ids []string
	defer func() {
		for _, id := range ids {
			// -v: each agent has its own clawkerd volume.
			_ = exec.CommandContext(ctx, "docker", "rm", "-fv", id).Run()
		}
	}()
	return e.profileWhile(ctx, dir, "cp-ready", "agents started one at a time to InitCompleted", profilePass, func() error {
		id, err := e.startAgent(ctx, agentImage, fmt.Sprintf("p%03d", len(ids)))
		if err != nil {
			return err
		}
		ids = append(ids, id)
		return waitFor(ctx, 2*time.Minute, 5*time.Millisecond, "init_completed "+id[:12], func() error {
			if _, ok := w.at(id, "init_completed"); !ok {
				return fmt.Errorf("not yet")
			}
			return nil
		})
	})
}

// profileExec profiles the CP under figure 4's two workloads.
func (e *env) profileExec(ctx context.Context, dir, agent string, bytes int) []cpProfile {
	rt := e.profileWhile(ctx, dir, "cp-exec-true", "`clawker exec … true` in a loop", profilePass, func() error {
		_, err := e.must(ctx, "exec", agent, "--", "true")
		return err
	})
	tput := e.profileWhile(ctx, dir, "cp-exec-throughput",
		fmt.Sprintf("`clawker exec … head -c %d /dev/zero` in a loop", bytes), profilePass, func() error {
			cmd := e.clawkerCmd(ctx, "exec", agent, "--", "head", "-c", strconv.Itoa(bytes), "/dev/zero")
			cw := &countWriter{}
			cmd.Stdout = cw
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("%s: %w", cmd.Args, err)
			}
			if cw.n != int64(bytes) {
				return fmt.Errorf("%s: %d bytes of output, want %d", cmd.Args, cw.n, bytes)
			}
			return nil
		})
	return []cpProfile{rt, tput}
}

// inProcessProfile summarises a CPU profile the bench took of itself
// (profiled); it is nil-safe when profiling is off.
func inProcessProfile(ctx context.Context, dir, name, workload string) []cpProfile {
	if dir == "" {
		return nil
	}
	p := cpProfile{Name: "bench-" + name, Kind: "cpu", Workload: workload, File: name + ".cpu.pprof"}
	out, summary := profilePaths(dir, p.File)
	return []cpProfile{finishProfile(ctx, p, out, summary, nil)}
}
