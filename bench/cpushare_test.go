package main

import "testing"

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
