package clawkerdv1

import "slices"

// Capabilities are the names clawkerd lists in HelloAck.capabilities, one
// per additive change to the Session contract. A CP uses an addition only
// when the peer announced it, so a CP and a clawkerd of different ages (or
// another implementation of the base contract) keep working.
//
// Adding one: a constant here, its name appended to Announced (what this
// clawkerd build implements), and a HasCapability check at the CP's use.
// Names are "<feature>/v<N>"; a changed meaning is a new name, never a
// reused one. Record each in docs/spec-notes.md.
const (
	// CapFlowControl: ShellCommand.output_window and the OutputCredit
	// payload (per-command output credit window).
	CapFlowControl = "flow-control/v1"
	// CapExecUser: PipeStage.user and PipeStage.agent_user are honoured
	// (exec as a named user or uid[:gid], resolved in the container).
	CapExecUser = "exec-user/v1"
	// CapInitOnce: ShellCommand.once_key and HelloAck.completed_once
	// (one-time init steps run exactly once across CP crashes).
	CapInitOnce = "init-once/v1"
	// CapStdinCredit: ShellCommand.stdin_window and the StdinCredit
	// response (per-command stdin credit window).
	CapStdinCredit = "stdin-credit/v1"
	// CapCredForward: CredEnable/CredReply commands and the CredRequest
	// response (ssh-agent and git credentials relayed from the host).
	CapCredForward = "cred-forward/v1"
	// CapTTY: ShellCommand.tty with the Resize command (a command on a
	// pseudo-terminal), and ShellCommand.separate_stderr with
	// OutputChunk.stderr.
	CapTTY = "tty/v1"
)

// Announced is what this build's clawkerd lists in HelloAck.
var Announced = []string{
	CapFlowControl,
	CapExecUser,
	CapInitOnce,
	CapStdinCredit,
	CapCredForward,
	CapTTY,
}

// HasCapability reports whether ack announces name. A nil ack (no
// HelloAck seen) announces nothing.
func HasCapability(ack *HelloAck, name string) bool {
	return slices.Contains(ack.GetCapabilities(), name)
}
