package main

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
)

// TestPprofTopReadsAProfile takes a real heap profile and checks the
// summary the report prints: a header row and at least one function row.
func TestPprofTopReadsAProfile(t *testing.T) {
	// Every allocation sampled, and a GC before the write: a heap profile
	// shows what was live at the last GC, so without one it can be empty.
	defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
	runtime.MemProfileRate = 1
	keep := make([][]byte, 0, 64)
	for i := 0; i < 64; i++ {
		keep = append(keep, make([]byte, 64<<10))
	}
	file := filepath.Join(t.TempDir(), "x.heap.pprof")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	runtime.KeepAlive(keep) // the profile must still see these as in use
	rows, err := pprofTop(context.Background(), file, "heap")
	if err != nil {
		t.Fatal(err)
	}
	header := -1
	for i, r := range rows {
		if strings.HasPrefix(strings.TrimSpace(r), "flat") {
			header = i
		}
	}
	if header < 0 || header == len(rows)-1 {
		t.Fatalf("no header or no function rows in %q", rows)
	}
	if len(rows)-header-1 > profileTopRows {
		t.Fatalf("%d function rows, want at most %d", len(rows)-header-1, profileTopRows)
	}

	summary := filepath.Join(t.TempDir(), "x.heap.top.txt")
	p := finishProfile(context.Background(), cpProfile{Name: "x", Kind: "heap"}, file, summary, nil)
	if p.Error != "" || len(p.Top) == 0 {
		t.Fatalf("finishProfile: %+v", p)
	}
	if _, err := os.Stat(summary); err != nil {
		t.Fatalf("top listing not written: %v", err)
	}
	if p := finishProfile(context.Background(), cpProfile{Name: "y"}, filepath.Join(t.TempDir(), "missing"), summary, nil); p.Error == "" {
		t.Fatal("a missing profile must be reported, not summarised")
	}
}

// TestProfilePathsKeepRawApart checks that raw profiles land in the
// git-ignored raw/ subdirectory and only the text summary beside it.
func TestProfilePathsKeepRawApart(t *testing.T) {
	raw, summary := profilePaths("/p", "cp-ready.cpu.pprof")
	if raw != "/p/raw/cp-ready.cpu.pprof" || summary != "/p/cp-ready.cpu.top.txt" {
		t.Fatalf("profilePaths = %q, %q", raw, summary)
	}
}
