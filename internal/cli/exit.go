package cli

import (
	"errors"
	"fmt"
)

// Exit codes a script can rely on. Commands that run something in an agent
// (run attached, exec) pass the remote exit code through instead.
const (
	ExitOK          = 0
	ExitError       = 1 // the operation failed
	ExitUsage       = 2 // bad flags, arguments or names: nothing was done
	ExitUnavailable = 3 // Docker engine or control plane unreachable
	ExitNotFound    = 4 // the agent or object does not exist
)

// exitError carries an exit code with the message printed for it.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// withCode wraps err so the process exits with code.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

func usageErrorf(format string, a ...any) error {
	return withCode(ExitUsage, fmt.Errorf(format, a...))
}

// silentExit ends the process with code and prints nothing (the remote
// command already wrote its own output).
type silentExit struct{ code int }

func (s silentExit) Error() string { return fmt.Sprintf("exit status %d", s.code) }

// exitCode maps an error returned by a command to the process exit code.
func exitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var s silentExit
	if errors.As(err, &s) {
		return s.code
	}
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return ExitError
}
