package main

import (
	"math"
	"strings"
	"testing"
)

func TestParseLoadavg(t *testing.T) {
	if got := parseLoadavg("8.16 2.64 0.94 15/187 12624\n"); got != [3]float64{8.16, 2.64, 0.94} {
		t.Errorf("parseLoadavg = %v", got)
	}
	if got := parseLoadavg(""); got != [3]float64{} {
		t.Errorf("empty: %v", got)
	}
}

// TestCPUBusy: idle and iowait are idle; guest time, already inside user,
// is not counted twice.
func TestCPUBusy(t *testing.T) {
	a := parseCPUStat("cpu  100 0 100 700 100 0 0 0 50 0\ncpu0 1 2 3\n")
	b := parseCPUStat("cpu  400 0 200 900 100 0 0 0 90 0\n")
	if a.total != 1000 || a.idle != 800 {
		t.Fatalf("parse: %+v", a)
	}
	// 600 ticks passed, 200 of them idle.
	if got := a.busyUntil(b); math.Abs(got-2.0/3) > 1e-9 {
		t.Errorf("busy = %v, want 2/3", got)
	}
	if got := b.busyUntil(a); got != 0 {
		t.Errorf("backwards busy = %v, want 0", got)
	}
	if got := parseCPUStat("intr 1 2 3"); got != (cpuTimes{}) {
		t.Errorf("no cpu line: %+v", got)
	}
}

func TestTrackRecordsEachFigure(t *testing.T) {
	var r report
	ran := false
	if err := r.track("x", func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatal(err)
	}
	if len(r.Load) != 1 || r.Load[0].Figure != "x" || r.Load[0].Took == "" {
		t.Fatalf("load %+v", r.Load)
	}
	var b strings.Builder
	renderLoad(&b, r.Load)
	if !strings.Contains(b.String(), "| x | ") {
		t.Errorf("load table lacks the figure:\n%s", b.String())
	}
}
