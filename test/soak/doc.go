// Package soak holds the crash, churn and fault suites of issue 7: the CP
// killed with SIGKILL during bursts of agent starts, create/start/stop/rm
// churn across concurrent agents with leak checks read from /metrics, the
// Docker events stream cut by a socket proxy, and clawkerd under hostile
// workloads. Every test runs against the real Docker engine and prints its
// figures.
//
// Gating matches test/e2e: without a Docker engine every test skips, unless
// CLAWKER_E2E=1, which makes that a failure. CLAWKER_SOAK=long selects the
// long mode (≥20 crash rounds, ≥500 churn cycles, a 1 GiB output); the
// default is sized for CI (about 70 s plus the build). The suite uses the
// fixed names clawker-net and clawker-controlplane, so TestMain holds
// testenv.LockFixedNames while it runs; test/e2e must hold it too.
//
// It owns only Docker objects labelled dev.clawker.test=soak; it never
// touches the code under test.
package soak
