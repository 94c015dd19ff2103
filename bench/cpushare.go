package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cpuShares is where the machine's CPU went, as cumulative counters: the
// whole machine (/proc/stat busy), every Docker container (the cgroup v1
// cpuacct group of the cgroupfs driver), and the engine's own processes.
// A fan-out restart is CPU-bound on two cores, so its wall time is read
// against who spent the CPU.
type cpuShares struct {
	Machine, Containers, Engine time.Duration
}

// engineComms are the engine's processes by /proc comm (15 characters at
// most). One that exits inside a window loses its share.
var engineComms = map[string]bool{"dockerd": true, "containerd": true, "containerd-shim": true, "docker-proxy": true}

// clockTick is USER_HZ, the unit of /proc/stat and /proc/<pid>/stat: 100
// on every Linux architecture Docker supports.
const clockTick = 10 * time.Millisecond

func readCPUShares() cpuShares {
	c := readCPU()
	s := cpuShares{Machine: time.Duration(c.total-c.idle) * clockTick}
	if b, err := os.ReadFile("/sys/fs/cgroup/cpuacct/docker/cpuacct.usage"); err == nil {
		ns, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		s.Containers = time.Duration(ns)
	}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if comm, ticks, ok := parseProcStat(string(b)); ok && engineComms[comm] {
			s.Engine += time.Duration(ticks) * clockTick
		}
	}
	return s
}

// parseProcStat reads comm and utime+stime from one /proc/<pid>/stat.
func parseProcStat(s string) (comm string, ticks uint64, ok bool) {
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", 0, false
	}
	// After ") ": state is field 3, utime and stime fields 14 and 15.
	f := strings.Fields(s[end+1:])
	if len(f) < 13 {
		return "", 0, false
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	return s[open+1 : end], u + st, err1 == nil && err2 == nil
}

func (a cpuShares) until(b cpuShares) cpuShares {
	return cpuShares{Machine: b.Machine - a.Machine, Containers: b.Containers - a.Containers, Engine: b.Engine - a.Engine}
}
