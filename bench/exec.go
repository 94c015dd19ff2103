package main

import (
	"context"
	"fmt"
	"io"
	"iter"
	"os/exec"
	"strings"
	"time"

	"github.com/clawker/clawker/internal/consts"
)

// execResult is figure 4.
type execResult struct {
	RoundTrip       stat `json:"clawker_exec_true"`
	AnchorRoundTrip stat `json:"docker_exec_true"`
	Throughput      stat `json:"clawker_exec_throughput"`
	AnchorThrough   stat `json:"docker_exec_throughput"`
	Bytes           int  `json:"bytes"`
	// ClawkerShortRuns counts throughput runs where clawker exec exited 0
	// but delivered fewer bytes than the command wrote (the CP drops
	// output beyond its 8 MiB per-command queue when the reader lags).
	ClawkerShortRuns  int     `json:"clawker_short_runs"`
	ClawkerMinDeliver float64 `json:"clawker_min_delivered_fraction"`
	// CPDropLogs counts the CP's event=agent_exec_output_dropped log lines
	// after the throughput runs: the cause of short deliveries.
	CPDropLogs int `json:"cp_exec_output_dropped_logs"`
	// CLIFloor is `clawker version`: process start and exit, no RPC — the
	// part of the round trip that is not the exec path.
	CLIFloor stat `json:"clawker_version_floor"`
	// RoundTripPinned is clawker exec with CLAWKER_CP_ADMIN_ADDR set, so
	// the CLI skips its Docker lookup of the CP's published port.
	RoundTripPinned stat `json:"clawker_exec_true_admin_addr_pinned"`
	// CPSide is the CP's share of each `true` round trip: engine log
	// timestamps of its event=admin_exec and event=admin_exec_done lines.
	CPSide stat `json:"cp_side_exec_true"`
	// Stdin is stdin throughput (bench/stdin.go).
	Stdin stdinResult `json:"stdin"`
}

// countWriter counts what the output pipe delivered.
type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// measureExec interleaves clawker exec and docker exec runs (alternate) so
// drift in machine load hits both alike.
func (e *env) measureExec(ctx context.Context, agent, id string, reps, tputReps, bytes int) (execResult, error) {
	res := execResult{Bytes: bytes}
	var rt, art, tp, atp sample
	var got int64
	once := func(cmd *exec.Cmd, want int64) (time.Duration, error) {
		cw := &countWriter{}
		defer func() { got = cw.n }()
		cmd.Stdout = cw
		cmd.Stderr = io.Discard
		start := time.Now()
		err := cmd.Run()
		took := time.Since(start)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", cmd.Args, err)
		}
		if want >= 0 && cw.n != want {
			return 0, fmt.Errorf("%s: %d bytes of output, want %d", cmd.Args, cw.n, want)
		}
		return took, nil
	}
	// Warm both paths once (page cache, the CLI's first dial).
	if _, err := once(e.clawkerCmd(ctx, "exec", agent, "--", "true"), 0); err != nil {
		return res, err
	}
	if _, err := once(exec.CommandContext(ctx, "docker", "exec", id, "true"), 0); err != nil {
		return res, err
	}
	adminAddr, err := e.cpStatusField(ctx, "admin_addr")
	if err != nil {
		return res, err
	}
	pinned := func() *exec.Cmd {
		c := e.clawkerCmd(ctx, "exec", agent, "--", "true")
		c.Env = append(c.Env, "CLAWKER_CP_ADMIN_ADDR="+adminAddr)
		return c
	}
	var floor, pin sample
	// The four commands take turns going first (alternate): whatever runs
	// right after `docker exec` pays for the engine's cleanup of that
	// exec, so no variant may always hold that place.
	timed := func(mk func() *exec.Cmd, want int64, into *sample) variant {
		return variant{reps, func(int) error {
			d, err := once(mk(), want)
			if err == nil {
				into.addDur(d)
			}
			return err
		}}
	}
	if err := alternate(
		timed(pinned, 0, &pin),
		timed(func() *exec.Cmd { return e.clawkerCmd(ctx, "version") }, -1, &floor),
		timed(func() *exec.Cmd { return e.clawkerCmd(ctx, "exec", agent, "--", "true") }, 0, &rt),
		timed(func() *exec.Cmd { return exec.CommandContext(ctx, "docker", "exec", id, "true") }, 0, &art),
	); err != nil {
		return res, err
	}
	if logs, err := e.logs(ctx, consts.ControlPlaneContainer, true); err == nil {
		res.CPSide = execSpans(logs)
	}
	mib := float64(bytes) / (1 << 20)
	head := fmt.Sprintf("head -c %d /dev/zero", bytes)
	res.ClawkerMinDeliver = 1
	viaClawker := func(int) error {
		// want -1: a short delivery is recorded, not fatal, so the report
		// can show it.
		d, err := once(e.clawkerCmd(ctx, "exec", agent, "--", "sh", "-c", head), -1)
		if err != nil {
			return err
		}
		if got != int64(bytes) {
			res.ClawkerShortRuns++
			if f := float64(got) / float64(bytes); f < res.ClawkerMinDeliver {
				res.ClawkerMinDeliver = f
			}
		}
		// Throughput counts what was delivered.
		tp.add(float64(got) / (1 << 20) / d.Seconds())
		return nil
	}
	viaDocker := func(int) error {
		d, err := once(exec.CommandContext(ctx, "docker", "exec", id, "sh", "-c", head), int64(bytes))
		if err != nil {
			return err
		}
		atp.add(mib / d.Seconds())
		return nil
	}
	if err := alternate(variant{tputReps, viaClawker}, variant{tputReps, viaDocker}); err != nil {
		return res, err
	}
	res.RoundTrip, res.AnchorRoundTrip, res.CLIFloor = rt.stat("ms"), art.stat("ms"), floor.stat("ms")
	res.RoundTripPinned = pin.stat("ms")
	if logs, err := e.logs(ctx, consts.ControlPlaneContainer, false); err == nil {
		res.CPDropLogs = strings.Count(logs, `"event":"agent_exec_output_dropped"`)
	}
	res.Throughput, res.AnchorThrough = tp.stat("MiB/s"), atp.stat("MiB/s")
	if res.Stdin, err = e.measureStdin(ctx, agent, id, tputReps, bytes); err != nil {
		return res, fmt.Errorf("stdin: %w", err)
	}
	return res, nil
}

// execSpans pairs each admin_exec line with the next admin_exec_done line
// (the bench runs one exec at a time) and returns the spans between their
// engine timestamps.
func execSpans(logs string) stat {
	var sp sample
	var open time.Time
	for t, rest := range timedLines(logs) {
		switch {
		case strings.Contains(rest, `"event":"admin_exec_done"`):
			if !open.IsZero() {
				sp.addDur(t.Sub(open))
				open = time.Time{}
			}
		case strings.Contains(rest, `"event":"admin_exec"`):
			open = t
		}
	}
	return sp.stat("ms")
}

// timedLines yields each line of a container log taken with timestamps:
// the engine's time and the rest of the line.
func timedLines(logs string) iter.Seq2[time.Time, string] {
	return func(yield func(time.Time, string) bool) {
		for line := range strings.SplitSeq(logs, "\n") {
			ts, rest, ok := strings.Cut(line, " ")
			if !ok {
				continue
			}
			t, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				continue
			}
			if !yield(t, rest) {
				return
			}
		}
	}
}
