package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
)

// cpUp starts the CP with the CLI and returns its health address.
func (e *env) cpUp(ctx context.Context) (string, error) {
	if _, err := e.must(ctx, "cp", "up", "--wait", "120s"); err != nil {
		return "", err
	}
	r, err := e.must(ctx, "cp", "status", "-o", "json")
	if err != nil {
		return "", err
	}
	var st struct {
		HealthAddr string `json:"health_addr"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.HealthAddr == "" {
		return "", fmt.Errorf("cp status -o json: %v: %s", err, r.stdout)
	}
	return st.HealthAddr, nil
}

// scrape fetches /metrics and returns every unlabelled-or-labelled series
// by its full text name (e.g. `clawker_cp_sessions{state="connected"}`).
func scrape(ctx context.Context, healthAddr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+healthAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

const connectedSeries = `clawker_cp_sessions{state="connected"}`

// cpStats is a one-shot docker stats reading of the CP container.
type cpStats struct {
	CPU      time.Duration // cumulative CPU time since the container started
	MemBytes float64       // usage minus page cache (what docker stats shows)
}

func (e *env) cpStats(ctx context.Context) (cpStats, error) {
	res, err := e.docker.ContainerStats(ctx, consts.ControlPlaneContainer, mobyclient.ContainerStatsOptions{Stream: false, IncludePreviousSample: false})
	if err != nil {
		return cpStats{}, err
	}
	defer res.Body.Close()
	var s struct {
		CPUStats struct {
			CPUUsage struct {
				TotalUsage uint64 `json:"total_usage"`
			} `json:"cpu_usage"`
		} `json:"cpu_stats"`
		MemoryStats struct {
			Usage uint64            `json:"usage"`
			Stats map[string]uint64 `json:"stats"`
		} `json:"memory_stats"`
	}
	if err := json.NewDecoder(res.Body).Decode(&s); err != nil {
		return cpStats{}, fmt.Errorf("decode stats: %w", err)
	}
	mem := s.MemoryStats.Usage
	if v, ok := s.MemoryStats.Stats["inactive_file"]; ok && v < mem {
		mem -= v
	} else if v, ok := s.MemoryStats.Stats["total_inactive_file"]; ok && v < mem {
		mem -= v
	}
	return cpStats{CPU: time.Duration(s.CPUStats.CPUUsage.TotalUsage), MemBytes: float64(mem)}, nil
}

// evWatch follows `clawker events -f -o json` and records, per container,
// when each event name was first seen (the CP's event timestamp).
type evWatch struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	mu     sync.Mutex
	seen   map[string]map[string]time.Time // container ID → event name → first time
	counts map[string]map[string]int       // container ID → event name → occurrences
	done   chan struct{}
}

func (e *env) watchEvents(ctx context.Context) (*evWatch, error) {
	ctx, cancel := context.WithCancel(ctx)
	w := &evWatch{cancel: cancel, seen: map[string]map[string]time.Time{}, counts: map[string]map[string]int{}, done: make(chan struct{})}
	w.cmd = e.clawkerCmd(ctx, "events", "-f", "--since", "0", "-o", "json")
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	if err := w.cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	go func() {
		defer close(w.done)
		w.read(out)
	}()
	return w, nil
}

func (w *evWatch) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		var ev struct {
			Time        time.Time `json:"time"`
			Name        string    `json:"name"`
			ContainerID string    `json:"container_id"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.ContainerID == "" {
			continue
		}
		w.mu.Lock()
		m := w.seen[ev.ContainerID]
		if m == nil {
			m = map[string]time.Time{}
			w.seen[ev.ContainerID] = m
		}
		if _, ok := m[ev.Name]; !ok {
			m[ev.Name] = ev.Time
		}
		if w.counts[ev.ContainerID] == nil {
			w.counts[ev.ContainerID] = map[string]int{}
		}
		w.counts[ev.ContainerID][ev.Name]++
		w.mu.Unlock()
	}
}

// at returns when id first showed event name.
func (w *evWatch) at(id, name string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.seen[id][name]
	return t, ok
}

func (w *evWatch) count(id, name string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.counts[id][name]
}

func (w *evWatch) stop() {
	w.cancel()
	_ = w.cmd.Wait()
	<-w.done
}
