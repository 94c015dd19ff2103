// Package testenv prepares the real Docker engine for the e2e suite, the
// soak suite and the benchmark program: it builds the three static
// binaries, imports the busybox agent image, runs the CLI as a subprocess
// and sweeps labelled leftovers. It is test support only; no product code
// imports it.
package testenv
