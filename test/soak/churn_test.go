package soak

import (
	"context"
	"fmt"
	"path/filepath"
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
	// Two phases of churn, the CP's heap measured after a forced GC at the
	// end of each with no agent left: the difference per cycle is what a
	// cycle retains (a leak grows with the cycle count, noise does not).
	phases := [2]int{max(1, cycles/2), cycles - max(1, cycles/2)}
	var heapAt [2]float64
	var cyclesAt [2]int64
	for p, n := range phases {
		churnPhase(t, e, workers, n, &done)
		heapAt[p], cyclesAt[p] = e.liveHeapAfterChurn(), done.Load()
		t.Logf("after %d cycles: heap_alloc after GC %.2f MiB", cyclesAt[p], heapAt[p]/(1<<20))
	}
	growth := heapAt[1] - heapAt[0]
	perCycle := growth / float64(cyclesAt[1]-cyclesAt[0])
	// A retained Session, goroutine or map entry per cycle costs KiBs; the
	// 1 MiB floor absorbs allocator and GC-timing noise in a short run.
	if perCycle > churnHeapPerCycleMax && growth > churnHeapNoise {
		t.Errorf("heap grew %.0f bytes over %d cycles (%.0f B/cycle, bound %d)", growth, cyclesAt[1]-cyclesAt[0], perCycle, churnHeapPerCycleMax)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The survivor: it must end registered and connected.
			if _, err := e.run("churn", fmt.Sprintf("w%02d", w), "sleep", "3600"); err != nil {
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
	t.Logf("churn soak: %d workers, %d create/start/stop/start/rm cycles in %s, %d survivors registered and connected; heap after GC %+.1f KiB per cycle between cycle %d and %d",
		workers, done.Load(), churnTime.Round(time.Second), len(live), perCycle/1024, cyclesAt[0], cyclesAt[1])
	t.Logf("CP before: %s", formatFigures(before))
	t.Logf("CP with %d agents: %s", workers, formatFigures(during))
	t.Logf("CP after:  %s", formatFigures(after))
}

// Churn heap bounds: growth per cycle of the GC'd heap, and the floor
// under which a short run's difference is not judged. The floor covers
// bounded structures still filling in the short run (the event replay
// ring, caches): 2.2 MiB over 20 cycles was seen once, 0.3 MiB another
// time; the long soak (500 cycles) is where the per-cycle bound bites.
const (
	churnHeapPerCycleMax = 4 << 10
	churnHeapNoise       = 4 << 20
)

// churnPhase runs n churn cycles on each of workers concurrent agents.
func churnPhase(t *testing.T, e *env, workers, n int, done *atomic.Int64) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("w%02d", w)
			for range n {
				if err := churnCycle(ctx, e, name); err != nil {
					errs <- fmt.Errorf("worker %s: %w", name, err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// liveHeapAfterChurn waits until the registry is empty, forces a GC in the
// CP (a heap profile runs runtime.GC first) and reads heap_alloc.
func (e *env) liveHeapAfterChurn() float64 {
	e.t.Helper()
	eventually(e.t, 2*time.Minute, "registry empty between churn phases", func() error {
		rows, err := e.agentsErr()
		if err != nil {
			return err
		}
		if len(rows) != 0 {
			return fmt.Errorf("%d rows left", len(rows))
		}
		return nil
	})
	e.must("cp", "profile", "--kind", "heap", "-o", filepath.Join(e.t.TempDir(), "heap.pprof"))
	return e.leakFigures()["go_memstats_heap_alloc_bytes"]
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
