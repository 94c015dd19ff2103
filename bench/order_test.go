package main

import (
	"errors"
	"reflect"
	"testing"
)

// TestInterleaveTakesTurns: equal counts alternate run by run and swap
// who goes first each round (A B B A …), so neither side always follows
// the other.
func TestInterleaveTakesTurns(t *testing.T) {
	if got, want := interleave(3, 3), []int{0, 1, 1, 0, 0, 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("interleave(3, 3) = %v, want %v", got, want)
	}
	// Four variants rotate: each holds every place once in four rounds.
	got := interleave(4, 4, 4, 4)
	for round := 0; round < 4; round++ {
		seen := map[int]bool{}
		for _, v := range got[round*4 : round*4+4] {
			seen[v] = true
		}
		if len(seen) != 4 {
			t.Fatalf("round %d of %v lacks a variant", round, got)
		}
	}
	for v := 0; v < 4; v++ {
		places := map[int]bool{}
		for round := 0; round < 4; round++ {
			for k, w := range got[round*4 : round*4+4] {
				if w == v {
					places[k] = true
				}
			}
		}
		if len(places) != 4 {
			t.Errorf("variant %d held places %v in %v, want all four", v, places, got)
		}
	}
}

// TestInterleaveSpreadsUnevenCounts: the rarer variant is spread over the
// whole run, not bunched at an end, and every run is planned once.
func TestInterleaveSpreadsUnevenCounts(t *testing.T) {
	got := interleave(10, 2)
	if len(got) != 12 {
		t.Fatalf("%d runs planned, want 12: %v", len(got), got)
	}
	var at []int
	for i, v := range got {
		if v == 1 {
			at = append(at, i)
		}
	}
	if len(at) != 2 || at[0] < 2 || at[0] > 4 || at[1] < 7 || at[1] > 9 {
		t.Errorf("the 2 runs fall at %v of %v, want one in each half, away from the ends", at, got)
	}
	if got := interleave(0, 2); !reflect.DeepEqual(got, []int{1, 1}) {
		t.Errorf("interleave(0, 2) = %v", got)
	}
}

func TestAlternateRunsInOrderAndStopsAtError(t *testing.T) {
	var trace []string
	rec := func(name string) func(int) error {
		return func(i int) error { trace = append(trace, name+string(rune('0'+i))); return nil }
	}
	if err := alternate(variant{2, rec("a")}, variant{2, rec("b")}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"a0", "b0", "b1", "a1"}; !reflect.DeepEqual(trace, want) {
		t.Errorf("trace %v, want %v", trace, want)
	}
	boom := errors.New("boom")
	calls := 0
	err := alternate(variant{3, func(int) error { calls++; return boom }}, variant{3, func(int) error { calls++; return nil }})
	if err != boom || calls != 1 {
		t.Errorf("err %v after %d calls, want boom after 1", err, calls)
	}
}
