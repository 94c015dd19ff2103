package daemon

import (
	"errors"
	"testing"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

func TestExecTerminalGatedOnCapability(t *testing.T) {
	withTTY := &clawkerdv1.HelloAck{Capabilities: []string{clawkerdv1.CapTTY}}
	old := &clawkerdv1.HelloAck{Capabilities: []string{clawkerdv1.CapExecUser}}

	cmd, err := execTerminal(&adminv1.ExecStart{Tty: true, TtyRows: 40, TtyCols: 120, Term: "xterm"}, withTTY, &clawkerdv1.ShellCommand{})
	if err != nil || cmd.GetTty().GetRows() != 40 || cmd.GetTty().GetCols() != 120 || cmd.GetTty().GetTerm() != "xterm" || cmd.GetSeparateStderr() {
		t.Fatalf("tty exec: %v %v", cmd, err)
	}
	// -t against an old clawkerd: refused, nothing built.
	if cmd, err := execTerminal(&adminv1.ExecStart{Tty: true}, old, &clawkerdv1.ShellCommand{}); !errors.Is(err, errExecNoTTY) || cmd != nil {
		t.Fatalf("old clawkerd -t: want errExecNoTTY, got %v %v", cmd, err)
	}
	// attach: the user CMD's terminal, only on tty/v1.
	if cmd, err := attachCommand(&adminv1.ExecStart{Attach: true, TtyRows: 50, TtyCols: 90}, withTTY); err != nil ||
		!cmd.GetAttachUserCmd() || len(cmd.GetStages()) != 0 || cmd.GetTty().GetRows() != 50 || cmd.GetTty().GetCols() != 90 {
		t.Fatalf("attach: %v %v", cmd, err)
	}
	if _, err := attachCommand(&adminv1.ExecStart{Attach: true}, old); !errors.Is(err, errAttachNoTTY) {
		t.Fatalf("attach to an old clawkerd: want errAttachNoTTY, got %v", err)
	}
	// Without -t: separate stderr only where announced, merged otherwise.
	if cmd, _ := execTerminal(&adminv1.ExecStart{SeparateStderr: true}, withTTY, &clawkerdv1.ShellCommand{}); !cmd.GetSeparateStderr() || cmd.GetTty() != nil {
		t.Fatalf("separate stderr not requested: %v", cmd)
	}
	if cmd, _ := execTerminal(&adminv1.ExecStart{SeparateStderr: true}, old, &clawkerdv1.ShellCommand{}); cmd.GetSeparateStderr() {
		t.Fatalf("separate stderr sent to a clawkerd without tty/v1: %v", cmd)
	}
}
