// Package e2e runs clawker end to end on the machine's real Docker engine:
// it builds the three static binaries, makes a busybox agent image by image
// import (no registry), and drives the CLI as a user would.
//
// Without a reachable engine the tests skip, unless CLAWKER_E2E=1 (set by
// .ci/run), which turns a missing engine into a failure. Every Docker
// object the suite creates carries dev.clawker.test=e2e and is removed
// afterwards; leftovers of an interrupted run are swept at start. The
// fixed names clawker-controlplane / clawker-net / clawker-cp-data are
// owned by the suite while it runs.
package e2e
