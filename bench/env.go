package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv"
)

const (
	benchLabelValue = "bench"
	benchLabel      = consts.LabelTest + "=" + benchLabelValue
	agentImage      = "clawker-bench-busybox:latest"
)

// env is the bench's prepared engine (testenv: binaries, busybox image,
// labelled sweep, the fixed-names lock) and its isolated CLI home.
type env struct {
	suite  *testenv.Suite
	docker *mobyclient.Client
	binDir string
	home   string
	work   string // cwd for CLI calls: no stray clawker.yaml
	// global are root flags before every CLI command (the kubernetes
	// figure's --runtime, --kubeconfig and -n).
	global []string
}

// newEnv sweeps leftovers, builds the binaries and imports the agent image.
func newEnv(ctx context.Context) (*env, error) {
	s, err := testenv.Setup(ctx, benchLabelValue, agentImage)
	if err != nil {
		return nil, err
	}
	e := &env{suite: s, docker: s.Docker, binDir: s.BinDir}
	for _, p := range []*string{&e.home, &e.work} {
		if *p, err = os.MkdirTemp("", "clawker-bench-"); err != nil {
			e.close()
			return nil, err
		}
	}
	return e, nil
}

func (e *env) close() {
	for _, d := range []string{e.home, e.work} {
		if d != "" {
			_ = os.RemoveAll(d)
		}
	}
	if e.suite != nil {
		e.suite.Close(context.Background())
	}
}

// sweep removes every bench container, keeping the agent image.
func (e *env) sweep(ctx context.Context) { e.suite.Sweep(ctx, true) }

// result is one CLI invocation.
type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// clawkerCmd prepares a CLI subprocess with the bench's home and labels.
func (e *env) clawkerCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.binDir+"/clawker", append(slices.Clone(e.global), args...)...)
	cmd.Env = append(os.Environ(), consts.EnvHome+"="+e.home, "CLAWKER_LABELS="+benchLabel)
	cmd.Dir = e.work
	return cmd
}

// run runs a command to completion, timing it from fork to exit.
func run(cmd *exec.Cmd) (result, error) {
	var out, errb bytes.Buffer
	if cmd.Stdout == nil {
		cmd.Stdout = &out
	}
	cmd.Stderr = &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
		return r, nil
	}
	return r, err
}

// must runs the CLI and fails on a non-zero exit.
func (e *env) must(ctx context.Context, args ...string) (result, error) {
	r, err := run(e.clawkerCmd(ctx, args...))
	if err == nil && r.code != 0 {
		err = fmt.Errorf("clawker %s: %s", strings.Join(args, " "), r)
	}
	return r, err
}

// parallel runs f(0..n-1) with at most width in flight; first error wins.
func parallel(n, width int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, width)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(ctx context.Context, timeout, every time.Duration, what string, cond func() error) error {
	return testenv.WaitFor(ctx, timeout, every, what, cond)
}
