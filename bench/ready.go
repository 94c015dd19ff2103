package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	mobyclient "github.com/moby/moby/client"
)

// readyResult is figure 1.
type readyResult struct {
	StartToInit       stat `json:"start_to_init_completed"`
	ListenToConnected stat `json:"listening_to_session_connected"`
	InitSteps         int  `json:"init_steps"`
	// Breakdown of start → InitCompleted, for the profile.
	StartToListening    stat `json:"start_to_listening"`
	ConnectedToRegister stat `json:"session_connected_to_agent_registered"`
	RegisterToInit      stat `json:"agent_registered_to_init_completed"`
	// Anchor: the same number of steps, each a `docker exec <id> sh -c true`
	// run one after another — a lower bound for running the real step
	// scripts by hand, so the ratio is conservative.
	AnchorExecSteps stat `json:"anchor_docker_exec_steps"`
}

// logs returns a container's stdout+stderr so far.
func (e *env) logs(ctx context.Context, id string, timestamps bool) (string, error) {
	rc, err := e.docker.ContainerLogs(ctx, id, mobyclient.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Timestamps: timestamps})
	if err != nil {
		return "", err
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := stdcopy.StdCopy(&buf, &buf, rc); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// startAgent runs one detached agent of image and returns its ID.
func (e *env) startAgent(ctx context.Context, image, name string) (string, error) {
	r, err := e.must(ctx, "run", "-d", "--agent", name, image, "sleep", "86400")
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(r.stdout)
	if len(id) != 64 {
		return "", fmt.Errorf("run -d printed %q", r.stdout)
	}
	return id, nil
}

// listeningAt is when clawkerd logged "listening": its own timestamp when
// the line carries one finer than a second (the container shares the host
// clock), else the engine's receipt time, which lags by the log pipeline.
func (e *env) listeningAt(ctx context.Context, id string) (time.Time, error) {
	logs, err := e.logs(ctx, id, true)
	if err != nil {
		return time.Time{}, err
	}
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `"event":"listening"`) {
			continue
		}
		ts, msg, _ := strings.Cut(line, " ")
		if t, ok := ownTime(msg); ok && t.Nanosecond() != 0 {
			return t, nil
		}
		return time.Parse(time.RFC3339Nano, ts)
	}
	return time.Time{}, fmt.Errorf("no listening line in %s's logs", id[:12])
}

// ownTime is the "time" clawkerd wrote in a JSON log line.
func ownTime(line string) (time.Time, bool) {
	var own struct {
		Time time.Time `json:"time"`
	}
	if json.Unmarshal([]byte(line), &own) != nil || own.Time.IsZero() {
		return time.Time{}, false
	}
	return own.Time, true
}

func (e *env) startedAt(ctx context.Context, id string) (time.Time, error) {
	in, err := e.docker.ContainerInspect(ctx, id, mobyclient.ContainerInspectOptions{})
	if err != nil {
		return time.Time{}, err
	}
	return time.Parse(time.RFC3339Nano, in.Container.State.StartedAt)
}

// measureReady starts n agents one at a time, each after the previous one
// completed init (so each latency is uncontended by the others' init), and
// derives figure 1 from engine timestamps and CP event timestamps. The
// anchor's runs are interleaved with the agent starts (alternate), each on
// the newest running agent, so both sides see the same machine.
func (e *env) measureReady(ctx context.Context, w *evWatch, n, anchorReps int) (readyResult, []string, error) {
	var res readyResult
	var s2i, l2c, anchor, s2l, c2r, r2i sample
	ids := make([]string, 0, n)
	startOne := func(i int) error {
		id, err := e.startAgent(ctx, agentImage, fmt.Sprintf("r%03d", i))
		if err != nil {
			return err
		}
		ids = append(ids, id)
		if err := waitFor(ctx, 2*time.Minute, 10*time.Millisecond, "init_completed "+id[:12], func() error {
			if _, ok := w.at(id, "init_completed"); !ok {
				return fmt.Errorf("not yet")
			}
			return nil
		}); err != nil {
			return err
		}
		started, err := e.startedAt(ctx, id)
		if err != nil {
			return err
		}
		listening, err := e.listeningAt(ctx, id)
		if err != nil {
			return err
		}
		initAt, _ := w.at(id, "init_completed")
		connAt, _ := w.at(id, "session_connected")
		regAt, _ := w.at(id, "agent_registered")
		s2i.addDur(initAt.Sub(started))
		l2c.addDur(connAt.Sub(listening))
		s2l.addDur(listening.Sub(started))
		c2r.addDur(regAt.Sub(connAt))
		r2i.addDur(initAt.Sub(regAt))
		if steps := w.count(id, "init_step_completed"); steps > res.InitSteps {
			res.InitSteps = steps
		}
		return nil
	}
	// The anchor runs as many steps as the plan ran (known after the
	// first agent); runs planned before any agent exists wait for one.
	pending := 0
	anchorOne := func() error {
		id := ids[len(ids)-1]
		start := time.Now()
		for s := 0; s < max(res.InitSteps, 1); s++ {
			cmd := exec.CommandContext(ctx, "docker", "exec", id, "sh", "-c", "true")
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("docker exec anchor: %v: %s", err, out)
			}
		}
		anchor.addDur(time.Since(start))
		return nil
	}
	err := alternate(
		variant{n, func(i int) error {
			if err := startOne(i); err != nil {
				return err
			}
			for ; pending > 0; pending-- {
				if err := anchorOne(); err != nil {
					return err
				}
			}
			return nil
		}},
		variant{anchorReps, func(int) error {
			if len(ids) == 0 {
				pending++
				return nil
			}
			return anchorOne()
		}},
	)
	if err != nil {
		return res, ids, err
	}
	if res.InitSteps == 0 {
		res.InitSteps = 1
	}
	res.StartToInit = s2i.stat("ms")
	res.ListenToConnected = l2c.stat("ms")
	res.AnchorExecSteps = anchor.stat("ms")
	res.StartToListening, res.ConnectedToRegister, res.RegisterToInit = s2l.stat("ms"), c2r.stat("ms"), r2i.stat("ms")
	return res, ids, nil
}

func (e *env) cpStatusHealth(ctx context.Context) (string, error) {
	return e.cpStatusField(ctx, "health_addr")
}

// cpStatusField reads one address field of `cp status -o json`, waiting
// for it to appear.
func (e *env) cpStatusField(ctx context.Context, field string) (string, error) {
	var addr string
	err := waitFor(ctx, time.Minute, 20*time.Millisecond, "cp status "+field, func() error {
		r, err := e.must(ctx, "cp", "status", "-o", "json")
		if err != nil {
			return err
		}
		key := `"` + field + `":`
		i := strings.Index(r.stdout, key)
		if i < 0 {
			return fmt.Errorf("no %s: %s", field, r.stdout)
		}
		rest := r.stdout[i+len(key):]
		rest = strings.TrimLeft(rest, ` "`)
		addr, _, _ = strings.Cut(rest, `"`)
		return nil
	})
	return addr, err
}

// waitConnected polls /metrics (cheap, no CLI fork) until n Sessions are
// connected.
func (e *env) waitConnected(ctx context.Context, health string, n int, timeout time.Duration) error {
	return waitFor(ctx, timeout, 10*time.Millisecond, fmt.Sprintf("%d sessions connected", n), func() error {
		m, err := scrape(ctx, health)
		if err != nil {
			return err
		}
		if got := int(m[connectedSeries]); got < n {
			return fmt.Errorf("%d connected", got)
		}
		return nil
	})
}
