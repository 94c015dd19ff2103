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

// stat is the JSON form of a sample.
type stat struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
	Unit string  `json:"unit"`
}

func (s *sample) stat(unit string) stat {
	return stat{N: s.n(), P50: s.quantile(0.5), P99: s.quantile(0.99), Min: s.min(), Max: s.max(), Unit: unit}
}

func (st stat) String() string {
	if st.N == 0 {
		return "n/a"
	}
	if st.N == 1 {
		return fmt.Sprintf("%s %s (n=1)", num(st.P50), st.Unit)
	}
	return fmt.Sprintf("p50 %s / p99 %s %s (min %s, max %s, n=%d)", num(st.P50), num(st.P99), st.Unit, num(st.Min), num(st.Max), st.N)
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
