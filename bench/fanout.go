package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
)

// fanoutResult is figure 2: the CP restarted several times over the same
// running agents, each restart timed until every Session is back.
type fanoutResult struct {
	Agents int `json:"agents"`
	fanoutSeries
	// B is the same restarts with the -fanout-b CP binary, alternated with
	// the built one (a before/after in one run); nil without it.
	B                      *fanoutSeries `json:"b,omitempty"`
	MemBaselineBytes       float64       `json:"cp_mem_baseline_bytes"`
	HeapBaselineBytes      float64       `json:"cp_go_heap_baseline_bytes"`
	SpawnSeconds           float64       `json:"spawn_seconds"`
	ConnectedBeforeRestart int           `json:"connected_before_restart"`
}

// fanoutSeries is one CP binary's restarts, one value per restart.
type fanoutSeries struct {
	Binary string `json:"binary,omitempty"` // "" is the bench's own build (or $CLAWKER_CP_BIN)
	// From the new CP container's start, and from `clawker cp up` invoked
	// (old CP already removed), to every Session connected.
	StartToAllConnected stat `json:"cp_start_to_all_connected"`
	UpToAllConnected    stat `json:"cp_up_to_all_connected"`
	CPUTime             stat `json:"cp_cpu_time"` // CP container CPU, its start → all connected
	// Offsets from the CP container's start, read from its log's engine
	// timestamps: its first line (process and Go start), its first and
	// last agent_session_connected.
	StartToFirstLog     stat `json:"cp_start_to_first_log"`
	StartToFirstSession stat `json:"cp_start_to_first_session"`
	StartToLastSession  stat `json:"cp_start_to_last_session"`
	// Memory once all are connected, less the zero-agent baseline, per
	// Session: the cgroup's (what docker stats shows) and the Go heap's.
	MemPerSession  stat `json:"cp_mem_per_session"`
	HeapPerSession stat `json:"cp_go_heap_per_session"`
	// Where the machine's CPU went from `cp up` invoked to all connected:
	// all of it, the agent containers (all containers less the CP; none
	// without cgroup v1), and the engine's processes (see cpuReading).
	// With -fanout-b these include an image import whenever `cp up` runs
	// the other binary than the restart before.
	MachineCPU stat `json:"machine_cpu"`
	AgentsCPU  stat `json:"agents_cpu"`
	EngineCPU  stat `json:"engine_cpu"`
}

// fanoutSamples collects a series' restarts.
type fanoutSamples struct {
	startToAll, upToAll, cpu, firstLog, firstSession, lastSession, mem, heap sample
	machine, agents, engine                                                  sample
}

func (s *fanoutSamples) series(binary string) fanoutSeries {
	return fanoutSeries{Binary: binary,
		StartToAllConnected: s.startToAll.stat("ms"), UpToAllConnected: s.upToAll.stat("ms"), CPUTime: s.cpu.stat("ms"),
		StartToFirstLog: s.firstLog.stat("ms"), StartToFirstSession: s.firstSession.stat("ms"), StartToLastSession: s.lastSession.stat("ms"),
		MemPerSession: s.mem.stat("KiB"), HeapPerSession: s.heap.stat("KiB"),
		MachineCPU: s.machine.stat("ms"), AgentsCPU: s.agents.stat("ms"), EngineCPU: s.engine.stat("ms")}
}

const heapSeries = "go_memstats_heap_inuse_bytes"

// measureFanout brings the agent count to n, then restarts the CP
// `restarts` times and times every Session reconnecting. With binB set,
// as many restarts run that CP binary instead, alternated with the built
// one. base is the CP at zero agents (taken right after the first cp up).
func (e *env) measureFanout(ctx context.Context, have []string, n, restarts int, binB string, base cpStats, baseHeap float64) (fanoutResult, error) {
	res := fanoutResult{Agents: n, MemBaselineBytes: base.MemBytes, HeapBaselineBytes: baseHeap}
	spawnStart := time.Now()
	if missing := n - len(have); missing > 0 {
		if err := parallel(missing, 3, func(i int) error {
			_, err := e.startAgent(ctx, agentImage, fmt.Sprintf("f%03d", i))
			return err
		}); err != nil {
			return res, err
		}
	}
	res.SpawnSeconds = time.Since(spawnStart).Seconds()
	health, err := e.cpStatusHealth(ctx)
	if err != nil {
		return res, err
	}
	if err := e.waitConnected(ctx, health, n, 5*time.Minute); err != nil {
		return res, err
	}
	res.ConnectedBeforeRestart = n

	var a, b fanoutSamples
	restart := func(s *fanoutSamples, bin string) func(int) error {
		return func(i int) error {
			if err := e.restartOnce(ctx, s, n, bin, base, baseHeap); err != nil {
				return fmt.Errorf("restart %d of %s: %w", i+1, binName(bin), err)
			}
			return nil
		}
	}
	vs := []variant{{restarts, restart(&a, "")}}
	if binB != "" {
		vs = append(vs, variant{restarts, restart(&b, binB)})
	}
	if err := alternate(vs...); err != nil {
		return res, err
	}
	if binB != "" {
		// Leave the bench's own build running: the heap and CPU profiles
		// that follow are labelled as its.
		if err := restart(&fanoutSamples{}, "")(restarts); err != nil {
			return res, err
		}
	}
	res.fanoutSeries = a.series("")
	if binB != "" {
		sb := b.series(binB)
		res.B = &sb
	}
	return res, nil
}

// binName names a restart's CP binary in errors.
func binName(bin string) string {
	if bin == "" {
		return "the bench's clawker-cp"
	}
	return bin
}

// restartOnce takes the CP down and up again (with bin as its binary when
// set) and records the time until all n Sessions are connected.
func (e *env) restartOnce(ctx context.Context, s *fanoutSamples, n int, bin string, base cpStats, baseHeap float64) error {
	if _, err := e.must(ctx, "cp", "down"); err != nil {
		return fmt.Errorf("cp down: %w", err)
	}
	shares := readCPUShares() // first: its /proc scan is not the restart's time
	upStart := time.Now()
	cmd := e.clawkerCmd(ctx, "cp", "up")
	if bin != "" {
		cmd.Env = append(cmd.Env, "CLAWKER_CP_BIN="+bin)
	}
	if r, err := run(cmd); err != nil || r.code != 0 {
		return fmt.Errorf("cp up: %v %s", err, r)
	}
	in, err := e.docker.ContainerInspect(ctx, consts.ControlPlaneContainer, mobyclient.ContainerInspectOptions{})
	if err != nil {
		return fmt.Errorf("inspect the CP: %w", err)
	}
	cpStarted, err := time.Parse(time.RFC3339Nano, in.Container.State.StartedAt)
	if err != nil {
		return fmt.Errorf("the CP's start time: %w", err)
	}
	health, err := e.cpStatusHealth(ctx)
	if err != nil {
		return fmt.Errorf("the CP's health address: %w", err)
	}
	if err := e.waitConnected(ctx, health, n, 2*time.Minute); err != nil {
		return err
	}
	done := time.Now()
	cpCPU, cpOK := containerCPU(in.Container.ID)
	spent := shares.until(readCPUShares())
	s.upToAll.addDur(done.Sub(upStart))
	s.startToAll.addDur(done.Sub(cpStarted))
	st, err := e.cpStats(ctx)
	if err != nil {
		return fmt.Errorf("the CP's stats: %w", err)
	}
	s.cpu.addDur(st.CPU)
	s.machine.addDur(spent.Machine)
	if spent.HasContainers && cpOK {
		// The CP started inside the window, so all its CPU is in it.
		s.agents.addDur(spent.Containers - cpCPU)
	}
	s.engine.addDur(spent.Engine)
	s.mem.add((st.MemBytes - base.MemBytes) / float64(n) / 1024)
	if logs, err := e.logs(ctx, consts.ControlPlaneContainer, true); err == nil {
		first, firstSession, lastSession := fanoutSpans(logs, cpStarted)
		s.firstLog.add(first)
		s.firstSession.add(firstSession)
		s.lastSession.add(lastSession)
	}
	if m, err := scrape(ctx, health); err == nil {
		s.heap.add((m[heapSeries] - baseHeap) / float64(n) / 1024)
	}
	return nil
}

// fanoutSpans reads a timestamped CP log: the offsets from start of its
// first line and of its first and last agent_session_connected, in ms.
func fanoutSpans(logs string, start time.Time) (firstLog, firstSession, lastSession float64) {
	ms := func(t time.Time) float64 { return float64(t.Sub(start)) / float64(time.Millisecond) }
	seen := false
	for t, rest := range timedLines(logs) {
		if !seen {
			firstLog, seen = ms(t), true
		}
		if strings.Contains(rest, `"event":"agent_session_connected"`) {
			if firstSession == 0 {
				firstSession = ms(t)
			}
			lastSession = ms(t)
		}
	}
	return firstLog, firstSession, lastSession
}
