package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	mobyclient "github.com/moby/moby/client"
)

type options struct {
	kube                  bool
	kubePods, kubeScale   int
	agents, fanout        int
	fanoutRestarts        int
	fanoutB               string
	gate                  []int
	execReps, tputReps    int
	tputBytes             int
	gateLookups, naive    int
	egressMiB, egressReqs int
	registryRows          int
	snapReps, anchorReps  int
	ttyKeys, ttyAttaches  int
	out, profileDir       string
	skip                  map[string]bool
}

// report is bench/report.json.
type report struct {
	Machine  machine         `json:"machine"`
	Options  map[string]any  `json:"options"`
	Started  time.Time       `json:"started"`
	Took     string          `json:"took"`
	Ready    *readyResult    `json:"ready,omitempty"`
	Fanout   *fanoutResult   `json:"fanout,omitempty"`
	Gate     []gateRow       `json:"identity_gate,omitempty"`
	Exec     *execResult     `json:"exec,omitempty"`
	Registry *registryResult `json:"registry,omitempty"`
	TTY      *ttyResult      `json:"tty,omitempty"`
	Kube     *kubeResult     `json:"kube,omitempty"`
	// Calibration is a do-nothing process's start, at the start and the
	// end of the run; Load is the machine's load around each figure.
	Calibration []calibration `json:"calibration,omitempty"`
	Load        []figureLoad  `json:"load,omitempty"`
	Egress      *egressResult `json:"egress,omitempty"`
	Profiles    []cpProfile   `json:"cp_profiles,omitempty"`
	Errors      []string      `json:"errors,omitempty"`
}

type machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	MemTotal  string `json:"mem_total"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	Docker    string `json:"docker"`
}

func main() {
	os.Exit(mainErr())
}

func mainErr() int {
	var o options
	var gate, skip string
	flag.IntVar(&o.agents, "agents", 50, "agents for the ready-latency figure (started one at a time)")
	flag.IntVar(&o.fanout, "fanout", 200, "running agents when the CP is restarted")
	flag.IntVar(&o.fanoutRestarts, "fanout-restarts", 3, "timed CP restarts over the fan-out agents")
	flag.StringVar(&o.fanoutB, "fanout-b", "", "a second clawker-cp binary: as many restarts with it, alternated (a before/after)")
	flag.StringVar(&gate, "gate", "10,100,500", "agent-container counts for the identity gate")
	flag.IntVar(&o.execReps, "exec-reps", 30, "round trips per exec path")
	flag.IntVar(&o.tputReps, "tput-reps", 7, "throughput runs per exec path")
	flag.IntVar(&o.tputBytes, "tput-bytes", 256<<20, "bytes of output per throughput run")
	flag.IntVar(&o.gateLookups, "gate-lookups", 300, "indexed lookups per container count")
	flag.IntVar(&o.naive, "gate-naive", 10, "naive walks per container count")
	flag.IntVar(&o.registryRows, "registry-rows", 10000, "registry rows for figure 5")
	flag.IntVar(&o.snapReps, "snapshot-reps", 30, "Snapshot calls at full size")
	flag.IntVar(&o.anchorReps, "anchor-reps", 50, "docker exec anchor runs of the init steps (interleaved with the agent starts)")
	flag.IntVar(&o.ttyKeys, "tty-keys", 300, "keystrokes per side for the exec -it echo latency")
	flag.IntVar(&o.ttyAttaches, "tty-attaches", 20, "exec -it sessions (and attaches) per side for the time to the first prompt byte")
	flag.StringVar(&o.out, "out", "bench", "directory for REPORT.md and report.json")
	flag.BoolVar(&o.kube, "kube", false, "run only figure 8, agents as pods, on the cluster in $KUBECONFIG (scripts/kube-up.sh)")
	flag.IntVar(&o.kubePods, "kube-pods", 20, "pods for figure 8's run → InitCompleted (started one at a time)")
	flag.IntVar(&o.kubeScale, "kube-scale", 100, "pods started at once for figure 8's Register cost")
	flag.StringVar(&o.profileDir, "profile", "", "write CPU profiles of the in-process figures, and CP profiles, here")
	flag.IntVar(&o.egressMiB, "egress-mib", 100, "MiB per egress download run")
	flag.IntVar(&o.egressReqs, "egress-requests", 1000, "small HTTPS requests per egress variant")
	flag.StringVar(&skip, "skip", "", "comma-separated figures to skip: calibration,ready,fanout,gate,exec,tty,registry,egress")
	flag.Parse()
	for _, f := range strings.Split(gate, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			o.gate = append(o.gate, n)
		}
	}
	o.skip = map[string]bool{}
	for _, f := range strings.Split(skip, ",") {
		o.skip[strings.TrimSpace(f)] = true
	}
	if o.fanout < o.agents {
		o.fanout = o.agents
	}
	if o.fanoutRestarts < 1 {
		fmt.Fprintln(os.Stderr, "bench: -fanout-restarts must be at least 1")
		return 2
	}
	if o.fanoutB != "" {
		abs, err := filepath.Abs(o.fanoutB)
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: -fanout-b:", err)
			return 2
		}
		o.fanoutB = abs
	}

	if o.profileDir != "" {
		// Absolute: the CLI that writes the CP profiles runs in another cwd.
		abs, err := filepath.Abs(o.profileDir)
		if err == nil {
			o.profileDir = abs
			err = os.MkdirAll(filepath.Join(abs, rawProfileDir), 0o755)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep := &report{Started: time.Now().UTC(), Options: map[string]any{
		"agents": o.agents, "fanout": o.fanout, "fanout_restarts": o.fanoutRestarts, "fanout_b": o.fanoutB, "gate": o.gate, "exec_reps": o.execReps, "tput_reps": o.tputReps,
		"tput_bytes": o.tputBytes, "gate_lookups": o.gateLookups, "gate_naive": o.naive,
		"registry_rows": o.registryRows, "snapshot_reps": o.snapReps, "anchor_reps": o.anchorReps,
		"tty_keys": o.ttyKeys, "tty_attaches": o.ttyAttaches,
	}}
	rep.Machine = describeMachine()
	all := runAll
	if o.kube {
		all = runKube
		rep.Options = map[string]any{"kube_pods": o.kubePods, "kube_scale": o.kubeScale, "anchor_reps": o.anchorReps}
	}
	err := calibrated(ctx, &o, rep, func() error { return all(ctx, &o, rep) })
	if err != nil {
		rep.Errors = append(rep.Errors, err.Error())
		fmt.Fprintln(os.Stderr, "bench:", err)
	}
	rep.Took = time.Since(rep.Started).Round(time.Second).String()
	if werr := writeReport(o.out, rep); werr != nil {
		fmt.Fprintln(os.Stderr, "bench: write report:", werr)
		return 1
	}
	if err != nil {
		return 1
	}
	return 0
}

func profiled(dir, name string, f func() error) error {
	if dir == "" {
		return f()
	}
	raw, _ := profilePaths(dir, name+".cpu.pprof")
	if err := os.MkdirAll(filepath.Dir(raw), 0o755); err != nil {
		return err
	}
	fh, err := os.Create(raw)
	if err != nil {
		return err
	}
	defer fh.Close()
	if err := pprof.StartCPUProfile(fh); err != nil {
		return err
	}
	defer pprof.StopCPUProfile()
	return f()
}

func runAll(ctx context.Context, o *options, rep *report) error {
	if !o.skip["registry"] {
		fmt.Println("figure 5: registry")
		if err := rep.track("registry", func() error {
			return profiled(o.profileDir, "registry", func() error {
				r, err := measureRegistry(o.registryRows, o.snapReps)
				rep.Registry = &r
				return err
			})
		}); err != nil {
			return fmt.Errorf("registry: %w", err)
		}
		rep.Profiles = append(rep.Profiles, inProcessProfile(ctx, o.profileDir, "registry",
			"in process: SQLite registry Adds then Snapshots at full size")...)
	}
	if !o.skip["egress"] {
		fmt.Println("figure 6: egress gateway")
		if err := rep.track("egress", func() error {
			return profiled(o.profileDir, "egress", func() error {
				r, err := measureEgress(ctx, o.egressMiB, o.egressReqs, 9)
				rep.Egress = &r
				return err
			})
		}); err != nil {
			return fmt.Errorf("egress: %w", err)
		}
		rep.Profiles = append(rep.Profiles, inProcessProfile(ctx, o.profileDir, "egress",
			"in process: egress gateway downloads and small requests, against direct")...)
	}
	if o.skip["ready"] && o.skip["fanout"] && o.skip["exec"] && o.skip["tty"] && o.skip["gate"] {
		return nil // in-process figures only: no engine needed
	}
	fmt.Println("building binaries and the agent image")
	e, err := newEnv(ctx)
	if err != nil {
		return err
	}
	defer e.close()
	rep.Machine.Docker = dockerVersion(ctx, e)
	if _, err := e.must(ctx, "init"); err != nil {
		return err
	}
	needCP := !o.skip["ready"] || !o.skip["fanout"] || !o.skip["exec"] || !o.skip["tty"]
	if needCP {
		if err := e.cpPhases(ctx, o, rep); err != nil {
			return err
		}
	}
	if !o.skip["gate"] && len(o.gate) > 0 {
		fmt.Println("figure 3: identity gate")
		// The CP is down and no agent runs: the sleepers are the only agents.
		e.sweep(ctx)
		if err := rep.track("identity gate", func() error {
			return profiled(o.profileDir, "gate", func() error {
				rows, err := e.measureGate(ctx, o.gate, o.gateLookups, o.naive)
				rep.Gate = rows
				return err
			})
		}); err != nil {
			return fmt.Errorf("identity gate: %w", err)
		}
		rep.Profiles = append(rep.Profiles, inProcessProfile(ctx, o.profileDir, "gate",
			"in process: MobyPeerLookup and the naive walk against the engine")...)
	}
	return nil
}

// cpPhases runs figures 1, 4 and 2 against one CP (fan-out last: it
// restarts the CP), then takes the CP and agents down.
func (e *env) cpPhases(ctx context.Context, o *options, rep *report) error {
	defer e.sweep(ctx)
	fmt.Println("cp up")
	health, err := e.cpUp(ctx)
	if err != nil {
		return err
	}
	// Zero-agent baseline for memory per Session, after the CP settled.
	if err := waitFor(ctx, time.Minute, 50*time.Millisecond, "metrics", func() error { _, err := scrape(ctx, health); return err }); err != nil {
		return err
	}
	base, err := e.cpStats(ctx)
	if err != nil {
		return err
	}
	m, _ := scrape(ctx, health)
	baseHeap := m[heapSeries]

	w, err := e.watchEvents(ctx)
	if err != nil {
		return err
	}
	defer w.stop()
	n := o.agents
	if n < 1 {
		n = 1
	}
	fmt.Printf("figure 1: ready latency over %d agents\n", n)
	var rr readyResult
	var ids []string
	if err := rep.track("ready", func() error {
		var err error
		rr, ids, err = e.measureReady(ctx, w, n, o.anchorReps)
		return err
	}); err != nil {
		return fmt.Errorf("ready latency: %w", err)
	}
	if !o.skip["ready"] {
		rep.Ready = &rr
		if o.profileDir != "" {
			fmt.Println("figure 1: CP profile")
			rep.Profiles = append(rep.Profiles, e.profileReady(ctx, w, o.profileDir))
		}
	}
	if !o.skip["exec"] {
		fmt.Println("figure 4: exec")
		var xr execResult
		if err := rep.track("exec", func() error {
			var err error
			xr, err = e.measureExec(ctx, "r000", ids[0], o.execReps, o.tputReps, o.tputBytes)
			return err
		}); err != nil {
			return fmt.Errorf("exec: %w", err)
		}
		rep.Exec = &xr
		if o.profileDir != "" {
			fmt.Println("figure 4: CP profiles")
			rep.Profiles = append(rep.Profiles, e.profileExec(ctx, o.profileDir, "r000", o.tputBytes)...)
		}
	}
	if !o.skip["tty"] {
		fmt.Println("figure 7: exec -it echo and attach")
		var tr ttyResult
		if err := rep.track("tty", func() error {
			var err error
			tr, err = e.measureTTY(ctx, "r000", ids[0], o.ttyKeys, o.ttyAttaches)
			return err
		}); err != nil {
			// Figure 7 drives two terminals: its failure is reported and
			// the run goes on to fan-out rather than lose it.
			rep.Errors = append(rep.Errors, "tty: "+err.Error())
			fmt.Fprintln(os.Stderr, "bench: tty:", err)
		} else {
			rep.TTY = &tr
		}
	}
	if !o.skip["fanout"] {
		fmt.Printf("figure 2: fan-out over %d agents\n", o.fanout)
		var fr fanoutResult
		if err := rep.track("fan-out", func() error {
			var err error
			fr, err = e.measureFanout(ctx, ids, o.fanout, o.fanoutRestarts, o.fanoutB, base, baseHeap)
			return err
		}); err != nil {
			return fmt.Errorf("fan-out: %w", err)
		}
		rep.Fanout = &fr
		if o.profileDir != "" {
			rep.Profiles = append(rep.Profiles, e.heapProfile(ctx, o.profileDir, "cp-fanout",
				fmt.Sprintf("heap in use with %d Sessions connected", o.fanout)))
			rep.Profiles = append(rep.Profiles, e.profileRestart(ctx, o.profileDir, o.fanout))
		}
	}
	_, err = e.must(ctx, "cp", "down")
	return err
}

func describeMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				_, v, _ := strings.Cut(l, ":")
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		l, _, _ := strings.Cut(string(b), "\n")
		_, v, _ := strings.Cut(l, ":")
		m.MemTotal = strings.TrimSpace(v)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func dockerVersion(ctx context.Context, e *env) string {
	v, err := e.docker.ServerVersion(ctx, mobyclient.ServerVersionOptions{})
	if err != nil {
		return "unknown"
	}
	return v.Version + " (API " + v.APIVersion + ")"
}

func writeReport(dir string, rep *report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	j, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "REPORT.md"), []byte(renderMarkdown(rep)), 0o644)
}
