package soak

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"
)

// leakSeries are the CP process figures the churn soak compares before and
// after (Prometheus' Go and process collectors, served on /metrics).
var leakSeries = []string{"go_goroutines", "process_open_fds", "go_memstats_heap_alloc_bytes"}

// TestChurnSoak runs create/start/stop/start/rm cycles on 20 concurrent
// agents while the CP runs. Each worker reuses its agent name, so a row not
// evicted on destroy would collide with the next registration. At the end
// one agent per worker stays up: the registry must equal the running agent
// containers exactly, each with a connected Session. Then all are removed
// and the CP's goroutines, open fds and heap must come back to the baseline
// taken before the churn.
func TestChurnSoak(t *testing.T) {
	e := newEnv(t)
	workers, cycles := 20, 2
	if long() {
		cycles = 25 // 20 × 25 = 500 cycles
	}
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	ctx := context.Background()

	before := e.leakFigures()
	t.Logf("baseline: %s", formatFigures(before))

	started := time.Now()
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("w%02d", w)
			for range cycles {
				if err := churnCycle(ctx, e, name); err != nil {
					errs <- fmt.Errorf("worker %s: %w", name, err)
					return
				}
				done.Add(1)
			}
			// The survivor: it must end registered and connected.
			if _, err := e.run("churn", name, "sleep", "3600"); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	churnTime := time.Since(started)

	eventually(t, 3*time.Minute, "registry equals the running agent containers, all connected", func() error {
		live, err := liveAgents(ctx)
		if err != nil {
			return err
		}
		if len(live) != workers {
			return fmt.Errorf("%d agent containers running, want %d", len(live), workers)
		}
		rows, err := e.agentsErr()
		if err != nil {
			return err
		}
		return checkRegistryMatchesLive(rows, live)
	})
	during := e.leakFigures()

	// Remove the survivors; the CP must let go of everything it held.
	live, err := liveAgents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for id := range live {
		if _, err := suite.docker.ContainerRemove(ctx, id, mobyclient.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 2*time.Minute, "registry and worldview empty after the last rm", func() error {
		rows, err := e.agentsErr()
		if err != nil {
			return err
		}
		if len(rows) != 0 {
			return fmt.Errorf("%d rows left:\n%s\nCP log for the first:\n%s", len(rows), formatRows(rows), e.cpLogFor(rows[0].ContainerID))
		}
		return nil
	})
	var after map[string]float64
	eventually(t, 2*time.Minute, "CP goroutines and fds back to baseline", func() error {
		after = e.leakFigures()
		// Slack for what a scrape itself holds (the HTTP connection, its
		// goroutines) and for the runtime's own helpers.
		if g, b := after["go_goroutines"], before["go_goroutines"]; g > b+10 {
			return fmt.Errorf("goroutines %v, baseline %v", g, b)
		}
		if f, b := after["process_open_fds"], before["process_open_fds"]; f > b+10 {
			return fmt.Errorf("open fds %v, baseline %v", f, b)
		}
		return nil
	})
	// The heap is reported, and bounded loosely: collection is lazy, so
	// garbage from the churn may still be counted.
	if h, b := after["go_memstats_heap_alloc_bytes"], before["go_memstats_heap_alloc_bytes"]; h > b+64<<20 {
		t.Errorf("heap %0.f bytes after, baseline %0.f: more than 64 MiB retained", h, b)
	}
	t.Logf("churn soak: %d workers, %d create/start/stop/start/rm cycles in %s, %d survivors registered and connected",
		workers, done.Load(), churnTime.Round(time.Second), workers)
	t.Logf("CP before: %s", formatFigures(before))
	t.Logf("CP with %d agents: %s", workers, formatFigures(during))
	t.Logf("CP after:  %s", formatFigures(after))
}

// churnCycle is one create/start/stop/start/rm of agent name.
func churnCycle(ctx context.Context, e *env, name string) error {
	id, err := e.run("churn", name, "sleep", "3600")
	if err != nil {
		return err
	}
	timeout := 2
	if _, err := suite.docker.ContainerStop(ctx, id, mobyclient.ContainerStopOptions{Timeout: &timeout}); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	if _, err := suite.docker.ContainerStart(ctx, id, mobyclient.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	if _, err := suite.docker.ContainerRemove(ctx, id, mobyclient.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
		return fmt.Errorf("rm: %w", err)
	}
	return nil
}

// leakFigures scrapes the CP's goroutines, open fds and heap.
func (e *env) leakFigures() map[string]float64 {
	e.t.Helper()
	var out map[string]float64
	eventually(e.t, 30*time.Second, "scrape /metrics", func() error {
		m, err := e.metrics()
		if err != nil {
			return err
		}
		out = map[string]float64{}
		for _, k := range leakSeries {
			v, ok := m[k]
			if !ok {
				return fmt.Errorf("/metrics has no %s", k)
			}
			out[k] = v
		}
		return nil
	})
	return out
}

func formatFigures(m map[string]float64) string {
	return fmt.Sprintf("goroutines=%.0f open_fds=%.0f heap_alloc=%.1fMiB",
		m["go_goroutines"], m["process_open_fds"], m["go_memstats_heap_alloc_bytes"]/(1<<20))
}
