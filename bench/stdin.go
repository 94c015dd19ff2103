package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"time"
)

// stdinResult is the stdin half of figure 4: bytes piped into `wc -c`
// through `clawker exec -i` (paced by stdin credit) and `docker exec -i`.
type stdinResult struct {
	Throughput    stat `json:"clawker_exec_stdin_throughput"`
	AnchorThrough stat `json:"docker_exec_stdin_throughput"`
	Bytes         int  `json:"bytes"`
}

// zeroReader yields zeros, like /dev/zero, without a syscall per read.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// measureStdin interleaves the two paths (alternate) and checks every
// run's count.
func (e *env) measureStdin(ctx context.Context, agent, id string, reps, n int) (stdinResult, error) {
	res := stdinResult{Bytes: n}
	var tp, atp sample
	once := func(cmd *exec.Cmd, into *sample) error {
		cmd.Stdin = io.LimitReader(zeroReader{}, int64(n))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, io.Discard
		start := time.Now()
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w", cmd.Args, err)
		}
		took := time.Since(start)
		if got := string(bytes.TrimSpace(out.Bytes())); got != strconv.Itoa(n) {
			return fmt.Errorf("%s: wc -c counted %q, want %d", cmd.Args, got, n)
		}
		into.add(float64(n) / (1 << 20) / took.Seconds())
		return nil
	}
	if err := alternate(
		variant{reps, func(int) error { return once(e.clawkerCmd(ctx, "exec", "-i", agent, "--", "wc", "-c"), &tp) }},
		variant{reps, func(int) error { return once(exec.CommandContext(ctx, "docker", "exec", "-i", id, "wc", "-c"), &atp) }},
	); err != nil {
		return res, err
	}
	res.Throughput, res.AnchorThrough = tp.stat("MiB/s"), atp.stat("MiB/s")
	return res, nil
}
