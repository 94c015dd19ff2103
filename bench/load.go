package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// figureLoad is the machine's load around one figure: the bench shares
// the machine, so a figure taken under load is read with that in mind.
type figureLoad struct {
	Figure string     `json:"figure"`
	Before [3]float64 `json:"loadavg_before"` // 1, 5, 15 min
	After  [3]float64 `json:"loadavg_after"`
	// CPUBusy is the fraction of all CPUs busy (not idle or iowait) while
	// the figure ran, the bench's own work included (/proc/stat).
	CPUBusy float64 `json:"cpu_busy"`
	Took    string  `json:"took"`
}

// track runs one figure and records the machine's load around it.
func (r *report) track(name string, f func() error) error {
	fl := figureLoad{Figure: name, Before: readLoadavg()}
	c0, start := readCPU(), time.Now()
	err := f()
	fl.After, fl.Took = readLoadavg(), time.Since(start).Round(time.Millisecond).String()
	fl.CPUBusy = c0.busyUntil(readCPU())
	r.Load = append(r.Load, fl)
	return err
}

func readLoadavg() [3]float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	return parseLoadavg(string(b))
}

// parseLoadavg reads the first three fields of /proc/loadavg.
func parseLoadavg(s string) [3]float64 {
	var l [3]float64
	for i, f := range strings.Fields(s) {
		if i == 3 {
			break
		}
		l[i], _ = strconv.ParseFloat(f, 64)
	}
	return l
}

// cpuTimes is the "cpu" line of /proc/stat, in clock ticks.
type cpuTimes struct{ idle, total uint64 }

func readCPU() cpuTimes {
	b, _ := os.ReadFile("/proc/stat")
	return parseCPUStat(string(b))
}

// parseCPUStat sums the aggregate cpu line; idle and iowait count as idle.
func parseCPUStat(s string) cpuTimes {
	line, _, _ := strings.Cut(s, "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return cpuTimes{}
	}
	var t cpuTimes
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		// guest and guest_nice (fields 9, 10) are already inside user.
		if i >= 8 {
			break
		}
		t.total += n
		if i == 3 || i == 4 {
			t.idle += n
		}
	}
	return t
}

// busyUntil is the busy fraction between two readings.
func (c cpuTimes) busyUntil(later cpuTimes) float64 {
	dt := later.total - c.total
	if later.total <= c.total {
		return 0
	}
	return 1 - float64(later.idle-c.idle)/float64(dt)
}

func fmtLoad(l [3]float64) string { return fmt.Sprintf("%.2f %.2f %.2f", l[0], l[1], l[2]) }

// renderLoad is the table of the machine's load around each figure.
func renderLoad(b *strings.Builder, ls []figureLoad) {
	if len(ls) == 0 {
		return
	}
	b.WriteString("\n## Machine load per figure\n\nloadavg (1, 5, 15 min) from /proc/loadavg just before and after each figure; CPU busy is the share of all CPUs not idle while it ran (/proc/stat), the bench's own work included. A figure taken with a 1-minute load well above the CPU count is slower than on an idle machine; its ratio still compares two sides run alternately under the same load.\n\n")
	b.WriteString("| Figure | Took | loadavg before | loadavg after | CPU busy |\n|---|---|---|---|---|\n")
	for _, l := range ls {
		fmt.Fprintf(b, "| %s | %s | %s | %s | %.0f %% |\n", l.Figure, l.Took, fmtLoad(l.Before), fmtLoad(l.After), 100*l.CPUBusy)
	}
}
