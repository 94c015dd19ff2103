package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// calibration is how long a process that does nothing takes to start and
// exit on this machine, at that moment: the floor under every CLI figure,
// and a gauge of how slow the machine was during the run.
type calibration struct {
	When   string `json:"when"`
	GoNoop stat   `json:"go_noop_binary"` // func main() {}, built by the bench
	True   stat   `json:"true"`           // /bin/true
}

// buildNoop builds a Go program that does nothing, the same way the
// bench's binaries are built (CGO off), into dir.
func buildNoop(ctx context.Context, dir string) (string, error) {
	src := filepath.Join(dir, "noop")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	files := map[string]string{"go.mod": "module noop\n\ngo 1.21\n", "main.go": "package main\n\nfunc main() {}\n"}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			return "", err
		}
	}
	bin := filepath.Join(dir, "noop-bin")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the do-nothing binary: %v: %s", err, out)
	}
	return bin, nil
}

// calibrate times reps starts of the do-nothing binary and of true,
// alternating.
func calibrate(ctx context.Context, when, noop string, reps int) (calibration, error) {
	c := calibration{When: when}
	truePath, err := exec.LookPath("true")
	if err != nil {
		return c, err
	}
	var g, t sample
	timed := func(path string, into *sample) func(int) error {
		return func(int) error {
			start := time.Now()
			if err := exec.CommandContext(ctx, path).Run(); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			into.addDur(time.Since(start))
			return nil
		}
	}
	// One untimed run each: page cache.
	for _, p := range []string{noop, truePath} {
		if err := exec.CommandContext(ctx, p).Run(); err != nil {
			return c, fmt.Errorf("%s: %w", p, err)
		}
	}
	err = alternate(variant{reps, timed(noop, &g)}, variant{reps, timed(truePath, &t)})
	c.GoNoop, c.True = g.stat("ms"), t.stat("ms")
	return c, err
}

// calibrated brackets the run with calibration rows (at the start and at
// the end), unless -skip calibration.
func calibrated(ctx context.Context, o *options, rep *report, f func() error) error {
	if o.skip["calibration"] {
		return f()
	}
	dir, err := os.MkdirTemp("", "clawker-bench-noop-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	noop, err := buildNoop(ctx, dir)
	if err != nil {
		return err
	}
	reps := max(o.execReps, 30)
	once := func(when string) error {
		fmt.Println("calibration:", when)
		return rep.track("calibration ("+when+")", func() error {
			c, err := calibrate(ctx, when, noop, reps)
			rep.Calibration = append(rep.Calibration, c)
			return err
		})
	}
	if err := once("start"); err != nil {
		return err
	}
	err = f()
	if cerr := once("end"); err == nil {
		err = cerr
	}
	return err
}

// calibrationRows are the report's first rows: the machine's floor.
func calibrationRows(rep *report) []row {
	var rows []row
	for _, c := range rep.Calibration {
		rows = append(rows, row{fmt.Sprintf("0. Calibration (%s of the run): a do-nothing Go binary, start → exit", c.When),
			c.GoNoop.String(), "`true`: " + c.True.String(), "—", "—"})
	}
	return rows
}
