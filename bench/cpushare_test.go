package main

import (
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	// A comm with a space and a parenthesis, as the kernel allows.
	line := "1479 (docker d) x) S 1 1479 1479 0 -1 4194560 1 0 0 0 2345 678 0 0 20 0 40 0 1 0 0\n"
	comm, ticks, ok := parseProcStat(line)
	if !ok || comm != "docker d) x" || ticks != 2345+678 {
		t.Fatalf("got %q %d %v", comm, ticks, ok)
	}
	if _, _, ok := parseProcStat("12 (short) S 1"); ok {
		t.Fatal("a truncated line parsed")
	}
}

// A process's CPU counts from the first reading, or from its start when
// it appeared in between; one gone by the second reading adds nothing.
func TestCPUSharesEngineDelta(t *testing.T) {
	before := cpuReading{machine: 1000, containers: 500, hasDocker: true, engine: map[int]time.Duration{1: 300, 2: 900}}
	after := cpuReading{machine: 1600, containers: 800, hasDocker: true, engine: map[int]time.Duration{1: 350, 3: 40}}
	s := before.until(after)
	if s.Machine != 600 || s.Containers != 300 || !s.HasContainers || s.Engine != 50+40 {
		t.Fatalf("got %+v", s)
	}
	if before.until(cpuReading{engine: map[int]time.Duration{}}).HasContainers {
		t.Fatal("containers counted without the docker cgroup")
	}
}
