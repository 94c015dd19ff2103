package main

import (
	"strings"
	"testing"
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
