package main

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// sample is a set of repeated measurements of one quantity.
type sample struct {
	vals []float64 // in the figure's unit
}

func (s *sample) add(v float64)          { s.vals = append(s.vals, v) }
func (s *sample) addDur(d time.Duration) { s.add(float64(d) / float64(time.Millisecond)) }
func (s *sample) n() int                 { return len(s.vals) }

// quantile uses the nearest-rank method: with few samples p99 is the max,
// which is the honest reading on a noisy shared machine.
func (s *sample) quantile(q float64) float64 {
	if len(s.vals) == 0 {
		return math.NaN()
	}
	v := append([]float64(nil), s.vals...)
	sort.Float64s(v)
	i := int(math.Ceil(q*float64(len(v)))) - 1
	if i < 0 {
		i = 0
	}
	return v[i]
}

func (s *sample) min() float64 { return s.quantile(0) }
func (s *sample) max() float64 { return s.quantile(1) }

// The noisy rule: a figure is noisy when its middle 80 % spans more than
// noisyThreshold of its median, i.e. (p90 − p10) / p50 > 0.5. p10/p90
// rather than min/max so one stray sample on a shared machine does not
// condemn a figure; with under 10 samples they are the min and max.
const (
	noisyThreshold = 0.5
	noisyRule      = "(p90 − p10) / p50 > 0.5 (nearest rank; with fewer than 10 samples p10/p90 are the min/max)"
)

// spread is (p90 − p10) / p50; NaN without samples or with a zero median.
func (s *sample) spread() float64 {
	med := s.quantile(0.5)
	if s.n() == 0 || med == 0 {
		return math.NaN()
	}
	return (s.quantile(0.9) - s.quantile(0.1)) / math.Abs(med)
}

// stat is the JSON form of a sample.
type stat struct {
	N      int     `json:"n"`
	P50    float64 `json:"p50"`
	P99    float64 `json:"p99"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	P10    float64 `json:"p10"`
	P90    float64 `json:"p90"`
	Spread float64 `json:"spread"` // (p90 − p10) / p50
	Noisy  bool    `json:"noisy"`
	Unit   string  `json:"unit"`
}

func (s *sample) stat(unit string) stat {
	st := stat{N: s.n(), P50: s.quantile(0.5), P99: s.quantile(0.99), Min: s.min(), Max: s.max(),
		P10: s.quantile(0.1), P90: s.quantile(0.9), Spread: s.spread(), Unit: unit}
	// A single sample has no spread to judge; it is flagged by n=1 instead.
	st.Noisy = st.N > 1 && !math.IsNaN(st.Spread) && st.Spread > noisyThreshold
	return st
}

func (st stat) String() string {
	if st.N == 0 {
		return "n/a"
	}
	if st.N == 1 {
		return fmt.Sprintf("%s %s (n=1)", num(st.P50), st.Unit)
	}
	s := fmt.Sprintf("min %s / median %s / max %s %s (p99 %s, n=%d)", num(st.Min), num(st.P50), num(st.Max), st.Unit, num(st.P99), st.N)
	if st.Noisy {
		s += fmt.Sprintf(" **noisy** (spread %.2f)", st.Spread)
	}
	return s
}

// noisy reports whether any of the figures behind a ratio or verdict is.
func noisy(sts ...stat) bool {
	for _, st := range sts {
		if st.Noisy {
			return true
		}
	}
	return false
}

// noisyMark is the suffix a ratio or verdict gets when a figure behind it
// is noisy: the reader should not lean on it.
func noisyMark(sts ...stat) string {
	if noisy(sts...) {
		return " (noisy)"
	}
	return ""
}

func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "n/a"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
