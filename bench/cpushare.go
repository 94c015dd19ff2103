package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cpuReading is where the machine's CPU had gone at one moment, as
// cumulative counters: the whole machine (/proc/stat busy), every Docker
// container (the cgroup v1 cpuacct group of the cgroupfs driver; hasDocker
// false elsewhere), and the engine's processes by pid. Figure 2 reads a
// restart's wall time against who spent the CPU.
type cpuReading struct {
	machine    time.Duration
	containers time.Duration
	hasDocker  bool
	engine     map[int]time.Duration
}

// cpuShares is the CPU spent between two readings.
type cpuShares struct {
	Machine, Containers, Engine time.Duration
	HasContainers               bool
}

// engineComms are the engine's processes by /proc comm (15 characters at
// most).
var engineComms = map[string]bool{"dockerd": true, "containerd": true, "containerd-shim": true, "docker-proxy": true}

// clockTick is USER_HZ, the unit of /proc/stat and /proc/<pid>/stat: 100
// on every Linux architecture Docker supports.
const clockTick = 10 * time.Millisecond

// dockerCgroup is the cgroupfs driver's parent group of every container.
const dockerCgroup = "/sys/fs/cgroup/cpuacct/docker"

func readCPUShares() cpuReading {
	c := readCPU()
	r := cpuReading{machine: time.Duration(c.total-c.idle) * clockTick, engine: map[int]time.Duration{}}
	r.containers, r.hasDocker = cgroupCPU(dockerCgroup)
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if comm, ticks, ok := parseProcStat(string(b)); ok && engineComms[comm] {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			r.engine[pid] = time.Duration(ticks) * clockTick
		}
	}
	return r
}

// containerCPU is one container's CPU since it started (cgroup v1).
func containerCPU(id string) (time.Duration, bool) {
	return cgroupCPU(filepath.Join(dockerCgroup, id))
}

func cgroupCPU(dir string) (time.Duration, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "cpuacct.usage"))
	if err != nil {
		return 0, false
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return time.Duration(ns), err == nil
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

// until is the CPU spent from r to later. The engine's share sums, per
// process alive at the end, what it spent since r (all of it if it was
// started since); a process that exited in between is not counted.
func (r cpuReading) until(later cpuReading) cpuShares {
	s := cpuShares{Machine: later.machine - r.machine,
		Containers: later.containers - r.containers, HasContainers: r.hasDocker && later.hasDocker}
	for pid, t := range later.engine {
		s.Engine += t - min(r.engine[pid], t)
	}
	return s
}
