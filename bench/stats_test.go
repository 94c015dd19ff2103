package main

import (
	"strings"
	"testing"
	"time"
)

func TestQuantileNearestRank(t *testing.T) {
	var s sample
	for i := 100; i >= 1; i-- {
		s.add(float64(i))
	}
	if got := s.quantile(0.5); got != 50 {
		t.Errorf("p50 = %v, want 50", got)
	}
	if got := s.quantile(0.99); got != 99 {
		t.Errorf("p99 = %v, want 99", got)
	}
	if s.min() != 1 || s.max() != 100 {
		t.Errorf("min/max = %v/%v", s.min(), s.max())
	}
	var few sample
	few.add(3)
	few.add(1)
	if got := few.quantile(0.99); got != 3 {
		t.Errorf("p99 of two samples = %v, want the max", got)
	}
}

func TestExecSpansPairsRequestAndDone(t *testing.T) {
	logs := strings.Join([]string{
		`2026-11-28T04:00:00.000000000Z {"event":"admin_exec","argv":["true"]}`,
		`2026-11-28T04:00:00.003000000Z {"event":"admin_exec_done","exit_code":0}`,
		`2026-11-28T04:00:01.000000000Z {"event":"something_else"}`,
		`2026-11-28T04:00:02.000000000Z {"event":"admin_exec","argv":["true"]}`,
		`2026-11-28T04:00:02.005000000Z {"event":"admin_exec_done","exit_code":0}`,
		`2026-11-28T04:00:03.000000000Z {"event":"admin_exec_done","exit_code":0}`, // unpaired: ignored
	}, "\n")
	st := execSpans(logs)
	if st.N != 2 || st.Min != 3 || st.Max != 5 {
		t.Fatalf("spans %+v, want two of 3 and 5 ms", st)
	}
}

func TestFanoutSpansFromContainerStart(t *testing.T) {
	start := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
	logs := strings.Join([]string{
		`2026-12-02T04:00:00.040000000Z {"event":"cp_starting"}`,
		`2026-12-02T04:00:00.300000000Z {"event":"agent_session_connected","container_id":"a"}`,
		`2026-12-02T04:00:00.900000000Z {"event":"agent_exec"}`,
		`2026-12-02T04:00:01.200000000Z {"event":"agent_session_connected","container_id":"b"}`,
	}, "\n")
	first, firstSession, lastSession := fanoutSpans(logs, start)
	if first != 40 || firstSession != 300 || lastSession != 1200 {
		t.Fatalf("spans %v %v %v, want 40 300 1200 ms", first, firstSession, lastSession)
	}
}

func TestParallelReportsFirstErrorAndRunsAll(t *testing.T) {
	var ran [10]bool
	err := parallel(10, 3, func(i int) error {
		ran[i] = true
		if i == 4 {
			return errTest
		}
		return nil
	})
	if err != errTest {
		t.Errorf("err = %v", err)
	}
	for i, r := range ran {
		if !r {
			t.Errorf("item %d not run", i)
		}
	}
}

var errTest = &testErr{}

type testErr struct{}

func (*testErr) Error() string { return "test" }

func sampleOf(vs ...float64) *sample {
	var s sample
	for _, v := range vs {
		s.add(v)
	}
	return &s
}

// TestNoisyRule pins the rule the report header states: (p90 − p10) / p50
// over 0.5 is noisy; one stray sample among many is not.
func TestNoisyRule(t *testing.T) {
	steady := sampleOf(10, 10, 11, 10, 9, 10, 11, 10, 9, 10)
	if st := steady.stat("ms"); st.Noisy || st.Spread != 0.2 {
		t.Errorf("steady: noisy %v spread %v, want false 0.2", st.Noisy, st.Spread)
	}
	// One outlier in 20: p90 stays in the bulk, so the figure holds.
	var stray sample
	for i := 0; i < 19; i++ {
		stray.add(10)
	}
	stray.add(100)
	if st := stray.stat("ms"); st.Noisy || st.Max != 100 {
		t.Errorf("one stray of 20: %+v, want not noisy, max 100", st)
	}
	wide := sampleOf(5, 10, 20, 10, 30, 10, 8, 12, 15, 40)
	if st := wide.stat("ms"); !st.Noisy || !strings.Contains(st.String(), "**noisy**") {
		t.Errorf("wide: %+v %q, want noisy", st, st.String())
	}
	// Exactly at the threshold is not noisy: the rule is "over".
	edge := sampleOf(8, 10, 13)
	if st := edge.stat("ms"); st.Spread != 0.5 || st.Noisy {
		t.Errorf("edge: spread %v noisy %v, want 0.5 false", st.Spread, st.Noisy)
	}
	// Small samples: p10/p90 are the min/max.
	if st := sampleOf(1, 3).stat("ms"); st.P10 != 1 || st.P90 != 3 || !st.Noisy {
		t.Errorf("two samples: %+v", st)
	}
	if st := sampleOf(7).stat("ms"); st.Noisy || st.String() != "7.00 ms (n=1)" {
		t.Errorf("one sample: %+v %q", st, st.String())
	}
	if st := (&sample{}).stat("ms"); st.Noisy || st.String() != "n/a" {
		t.Errorf("empty: %+v", st)
	}
	if st := sampleOf(0, 0, 0).stat("ms"); st.Noisy {
		t.Errorf("zero median must not divide into noisy: %+v", st)
	}
}

func TestStatStringShowsMinMedianMax(t *testing.T) {
	got := sampleOf(3, 1, 2).stat("ms").String()
	if want := "min 1.00 / median 2.00 / max 3.00 ms (p99 3.00, n=3) **noisy** (spread 1.00)"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	if got := sampleOf(100, 101, 102).stat("MiB/s").String(); got != "min 100 / median 101 / max 102 MiB/s (p99 102, n=3)" {
		t.Errorf("String = %q", got)
	}
}

func TestNoisyMarksRatiosAndVerdicts(t *testing.T) {
	calm, loud := sampleOf(10, 10, 10).stat("ms"), sampleOf(1, 10, 30).stat("ms")
	if got := p50Ratio(calm, calm); got != "p50 1.0×" {
		t.Errorf("calm ratio %q", got)
	}
	if got := p50Ratio(calm, loud); got != "p50 1.0× (noisy)" {
		t.Errorf("noisy ratio %q", got)
	}
	if got := verdict("≥10×", false, calm, loud); got != "≥10×: **not met** (noisy)" {
		t.Errorf("verdict %q", got)
	}
	if got := verdict("≥10×", true, calm); got != "≥10×: met" {
		t.Errorf("verdict %q", got)
	}
}
