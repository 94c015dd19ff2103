package main

import "sort"

// variant is one side of a comparison: n runs of run(i), i = 0..n-1.
type variant struct {
	n   int
	run func(i int) error
}

// interleave plans the runs of variants measured against each other. Each
// variant's runs are spread evenly over the whole sequence, so a drift in
// machine load hits every variant alike, and variants that meet at the
// same point take turns going first (A B, B A, A B, …), so none always
// pays for what the previous run left behind. It returns variant indices
// in run order.
func interleave(counts ...int) []int {
	type slot struct {
		at   float64 // fraction of the run at which this slot falls
		v, j int
	}
	var slots []slot
	for v, c := range counts {
		for j := 0; j < c; j++ {
			slots = append(slots, slot{(float64(j) + 0.5) / float64(c), v, j})
		}
	}
	k := len(counts)
	turn := func(s slot) int { return ((s.v-s.j)%k + k) % k }
	sort.SliceStable(slots, func(a, b int) bool {
		if slots[a].at != slots[b].at {
			return slots[a].at < slots[b].at
		}
		return turn(slots[a]) < turn(slots[b])
	})
	order := make([]int, len(slots))
	for i, s := range slots {
		order[i] = s.v
	}
	return order
}

// alternate runs the variants in interleave's order; the first error
// stops the run.
func alternate(vs ...variant) error {
	counts := make([]int, len(vs))
	for i, v := range vs {
		counts[i] = v.n
	}
	next := make([]int, len(vs))
	for _, v := range interleave(counts...) {
		if err := vs[v].run(next[v]); err != nil {
			return err
		}
		next[v]++
	}
	return nil
}
