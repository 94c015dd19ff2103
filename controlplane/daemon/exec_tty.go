package daemon

import (
	"errors"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// errExecNoTTY: an older clawkerd has no pseudo-terminals. Nothing is sent.
var errExecNoTTY = errors.New("this agent's clawkerd cannot give a command a terminal (recreate the agent to update it): run without -t")

// errAttachNoTTY: an older clawkerd cannot attach to the user CMD.
var errAttachNoTTY = errors.New("this agent's clawkerd cannot attach to its command's terminal (recreate the agent to update it)")

// attachCommand attaches to the user CMD's terminal at the client's size.
func attachCommand(start *adminv1.ExecStart, ack *clawkerdv1.HelloAck) (*clawkerdv1.ShellCommand, error) {
	if !clawkerdv1.HasCapability(ack, clawkerdv1.CapTTY) {
		return nil, errAttachNoTTY
	}
	return &clawkerdv1.ShellCommand{AttachUserCmd: true,
		Tty: &clawkerdv1.Tty{Rows: start.GetTtyRows(), Cols: start.GetTtyCols()}}, nil
}

// execTerminal adds exec -t's terminal, or separate stderr without one, to
// cmd. Both need tty/v1; without it -t is refused before anything runs,
// and stderr stays merged into output (the base contract).
func execTerminal(start *adminv1.ExecStart, ack *clawkerdv1.HelloAck, cmd *clawkerdv1.ShellCommand) (*clawkerdv1.ShellCommand, error) {
	has := clawkerdv1.HasCapability(ack, clawkerdv1.CapTTY)
	switch {
	case start.GetTty() && !has:
		return nil, errExecNoTTY
	case start.GetTty():
		cmd.Tty = &clawkerdv1.Tty{Rows: start.GetTtyRows(), Cols: start.GetTtyCols(), Term: start.GetTerm()}
	case start.GetSeparateStderr() && has:
		cmd.SeparateStderr = true
	}
	return cmd, nil
}
