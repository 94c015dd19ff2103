// Package daemon is the clawker-cp process: configuration, the startup
// order (data dir and schema → keys → bus → token endpoint → agent
// listener → Docker watcher → dialer/Start → admin listener → health and
// metrics), per-subsystem degradation, and graceful shutdown.
//
// It owns listeners and process lifetime only; every behaviour lives in
// the packages it wires (agent, token, overseer, dockerevents, admin).
// Nothing on a serving path exits the process: a subsystem that fails to
// start is reported as degraded on /healthz and in the log (event=...),
// and the rest keeps serving.
package daemon
