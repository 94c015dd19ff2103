// Package clawkerd is the in-container daemon: PID 1 of every agent
// container and the only way the control plane acts inside it.
//
// It owns:
//   - the strict mTLS Session listener (server.go, tls.go): chain to the
//     clawker CA, peer CN pinned to clawker-controlplane (constant time),
//     ClientAuth EKU, checked at the TLS layer and again in the handler;
//   - Session dispatch (session.go) and ShellCommand pipelines (shell.go);
//   - process bookkeeping and PID 1 reaping (procs.go);
//   - the user CMD supervisor and signal forwarding (supervisor.go);
//   - the one-time Register client (register.go), whose TLS connections
//     are pre-dialed on a fresh container so RegisterRequired finds the
//     handshakes done (prewarm.go);
//   - process wiring for cmd/clawkerd, the audit log included (run.go,
//     config.go).
//
// Sessions: several Sessions may be open at once and are independent; a
// reconnecting CP is therefore never locked out by a half-dead old stream
// (gRPC keepalive eventually tears that one down). command_ids are scoped
// to their Session. When a Session's transport breaks, its live commands
// are SIGKILLed and reaped; when the CP half-closes (CloseSend), live
// commands run to completion and their replies are still delivered. The
// user CMD (AgentReady), the init marker and the Register state are
// process-wide and outlive every Session.
//
// Pipelines: every stage of one ShellCommand runs in one process group, so
// Signal and timeout reach every stage and its descendants. The final exit
// code of a pipeline is that of its last stage (POSIX sh semantics, no
// pipefail); each stage's own status is reported by StageExit.
// exit_on_non_zero exits clawkerd after the terminal reply is flushed: with
// the Done code when non-zero, 124 on TIMEOUT, 127 on SPAWN_FAILED.
//
// Flow control: output is read in 32 KiB chunks and each Send blocks on
// gRPC flow control, so a command's memory is bounded whatever it writes.
// With ShellCommand.output_window set, the reader also sends only what the
// CP has credited (OutputCredit) and otherwise stops reading the pipe, so
// a slow consumer blocks the writer instead of losing output.
// Stdin frames queue per command without ever blocking the Session's recv
// loop (one command must not stall the others); a command whose unread
// stdin backlog exceeds 4 MiB is SIGKILLed and ends with IO_ERROR. A
// Signal that arrives before every stage has started is delivered as soon
// as they have. After the last stage exits, output is still read for
// OutputDrainGrace (time waiting on the pipe, not on credit) so
// descendants holding the pipe cannot stall Done.
//
// HelloAck also carries what the CP's init plan would otherwise have to
// ask with shell round trips: CLAWKER_USER as resolved for the user CMD,
// whether /bin/sh exists, and the listing of the init staging tree.
//
// It must not touch the control plane's state or Docker: it only answers
// the CP over the Session and calls AgentService.Register once.
package clawkerd
