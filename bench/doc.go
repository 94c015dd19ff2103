// Command bench is issue 8's benchmark: it sets up its own control plane
// and agents on the real Docker engine, measures each figure next to its
// anchor in the same run, and writes bench/REPORT.md and bench/report.json.
//
// It owns only the Docker objects labelled dev.clawker.test=bench (plus the
// fixed-name CP container and clawker-net while it runs, so it holds the
// fixed-names lock the engine suites hold). It never touches the
// user's clawker home: every CLI call gets a temporary CLAWKER_HOME.
//
// `make bench` passes -profile bench/profiles: CPU profiles of the
// in-process figures, and CP profiles taken through `clawker cp profile`
// while one figure's workload repeats, summarised in REPORT.md. Only the
// text summaries are committed; raw profiles go to the ignored raw/.
//
// Every comparison runs its two sides alternately (order.go); the report
// gives min/median/max, marks noisy figures, and records a calibration
// row (a do-nothing process) and the machine's load around each figure.
//
// Quick mode: go run ./bench -agents 10 -fanout 30 -gate 10,100 -exec-reps 10
//
// A before/after of a CP change on figure 2 alone, in one run (the
// restarts of the two binaries alternate over the same agents):
//
//	go run ./bench -skip calibration,ready,gate,exec,tty,registry,egress,stdin \
//	  -agents 1 -anchor-reps 1 -fanout 200 -fanout-restarts 4 -fanout-b /path/to/old/clawker-cp
package main
