package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// ttyResult is figure 7: an interactive shell in the agent through
// `clawker exec -it` against `docker exec -it` into the same container,
// both driven on ptys the bench owns, alternating.
type ttyResult struct {
	Keystrokes int `json:"keystrokes_per_side"`
	// Echo is keystroke → its echo back on the local terminal.
	Echo       stat `json:"clawker_exec_it_echo"`
	AnchorEcho stat `json:"docker_exec_it_echo"`
	// Attach is process start → first byte on the terminal (the prompt).
	Attach       stat `json:"clawker_exec_it_first_byte"`
	AnchorAttach stat `json:"docker_exec_it_first_byte"`
	// ReAttach is `clawker attach` to a running `run -dit … sh` agent,
	// with Enter typed at once, to the first byte of the prompt it
	// redraws; the anchor is `docker attach` to a `docker run -dit … sh`.
	ReAttach       stat   `json:"clawker_attach_first_byte"`
	AnchorReAttach stat   `json:"docker_attach_first_byte"`
	ReAttachError  string `json:"attach_error,omitempty"`
}

// ttyLine is how many keys go on one command line before Enter: short
// enough that no line wraps on the 120-column pty.
const ttyLine = 40

// detachKeys is the default detach sequence of both CLIs (ctrl-p ctrl-q).
const detachKeys = "\x10\x11"

func (e *env) measureTTY(ctx context.Context, agent, id string, keys, attaches int) (ttyResult, error) {
	res := ttyResult{Keystrokes: keys}
	clawker := func() *exec.Cmd { return e.clawkerCmd(ctx, "exec", "-it", agent, "--", "sh") }
	docker := func() *exec.Cmd { return exec.CommandContext(ctx, "docker", "exec", "-it", id, "sh") }

	// Time to the first prompt byte, alternating new sessions.
	var at, aat sample
	open := func(mk func() *exec.Cmd, into *sample) func(int) error {
		return func(int) error {
			s, err := startTTY(mk())
			if err != nil {
				return err
			}
			d, err := s.firstByte()
			if err == nil {
				_, err = s.prompt()
			}
			if err == nil {
				into.addDur(d)
			}
			if eerr := s.end("exit\r"); err == nil && eerr != nil {
				err = fmt.Errorf("%s: %w", s.cmd.Args, eerr)
			}
			return err
		}
	}
	if err := alternate(variant{attaches, open(clawker, &at)}, variant{attaches, open(docker, &aat)}); err != nil {
		return res, fmt.Errorf("exec -it first byte: %w", err)
	}
	res.Attach, res.AnchorAttach = at.stat("ms"), aat.stat("ms")

	// Echo: both shells open at once, keystrokes alternating between them.
	var echo, aecho sample
	typist := func(mk func() *exec.Cmd, into *sample) (func(int) error, func() error, error) {
		s, err := startTTY(mk())
		if err != nil {
			return nil, nil, err
		}
		p, err := s.prompt()
		if err != nil {
			_ = s.end("exit\r")
			return nil, nil, fmt.Errorf("%s: %w", s.cmd.Args, err)
		}
		// '#' starts a comment: each full line is a no-op command.
		return func(i int) error {
				d, err := s.keystroke('#')
				if err != nil {
					return fmt.Errorf("%s: %w", s.cmd.Args, err)
				}
				into.addDur(d)
				if (i+1)%ttyLine == 0 {
					return s.line(p)
				}
				return nil
			}, func() error {
				if err := s.end("\x15exit\r"); err != nil { // ctrl-u: drop a part line
					return fmt.Errorf("%s: %w", s.cmd.Args, err)
				}
				return nil
			}, nil
	}
	typeC, endC, err := typist(clawker, &echo)
	if err != nil {
		return res, err
	}
	typeD, endD, err := typist(docker, &aecho)
	if err != nil {
		_ = endC()
		return res, err
	}
	err = alternate(variant{keys, typeC}, variant{keys, typeD})
	errC, errD := endC(), endD()
	for _, e := range []error{err, errC, errD} {
		if e != nil {
			return res, fmt.Errorf("echo: %w", e)
		}
	}
	res.Echo, res.AnchorEcho = echo.stat("ms"), aecho.stat("ms")

	// Reattach is measured apart: its failure leaves the exec figures.
	if res.ReAttach, res.AnchorReAttach, err = e.measureReattach(ctx, attaches); err != nil {
		res.ReAttachError = err.Error()
	}
	return res, nil
}

// measureReattach times `clawker attach` and `docker attach` to a shell
// already running on a terminal: Enter is typed at once (the pty holds
// it until the CLI reads it) and the clock stops at the first byte of
// the redrawn prompt. Each attach ends with the detach keys.
func (e *env) measureReattach(ctx context.Context, reps int) (stat, stat, error) {
	var ra, rd sample
	if _, err := e.must(ctx, "run", "-dit", "--agent", "tty0", agentImage, "sh"); err != nil {
		return stat{}, stat{}, err
	}
	defer func() { _, _ = e.must(ctx, "rm", "-f", "tty0") }()
	out, err := exec.CommandContext(ctx, "docker", "run", "-dit", "--label", benchLabel, agentImage, "sh").Output()
	if err != nil {
		return stat{}, stat{}, fmt.Errorf("docker run -dit: %w", err)
	}
	did := strings.TrimSpace(string(out))
	defer func() { _ = exec.CommandContext(context.Background(), "docker", "rm", "-f", did).Run() }()
	// clawker attach needs the agent's Session: wait until it answers.
	if err := waitFor(ctx, 2*time.Minute, 50*time.Millisecond, "tty0 trusted", func() error {
		_, err := e.must(ctx, "exec", "tty0", "--", "true")
		return err
	}); err != nil {
		return stat{}, stat{}, err
	}
	attach := func(mk func() *exec.Cmd, into *sample) func(int) error {
		return func(int) error {
			s, err := startTTY(mk())
			if err != nil {
				return err
			}
			if _, err = s.ptmx.Write([]byte{'\r'}); err == nil {
				var d time.Duration
				if d, err = s.firstByte(); err == nil {
					into.addDur(d)
				}
			}
			// docker attach exits 1 on detach: only a hang is an error.
			var exit *exec.ExitError
			if eerr := s.end(detachKeys); err == nil && eerr != nil && !errors.As(eerr, &exit) {
				err = fmt.Errorf("%s: detach: %w", s.cmd.Args, eerr)
			}
			return err
		}
	}
	err = alternate(
		variant{reps, attach(func() *exec.Cmd { return e.clawkerCmd(ctx, "attach", "tty0") }, &ra)},
		variant{reps, attach(func() *exec.Cmd { return exec.CommandContext(ctx, "docker", "attach", did) }, &rd)},
	)
	return ra.stat("ms"), rd.stat("ms"), err
}

// ttyRows are figure 7's report rows.
func ttyRows(t *ttyResult) []row {
	if t == nil {
		return nil
	}
	add := t.Echo.P50 - t.AnchorEcho.P50
	rows := []row{
		{fmt.Sprintf("7. Keystroke echo, `clawker exec -it <agent> sh` (one byte typed on a pty, to its echo; %d per side, alternating)", t.Keystrokes),
			t.Echo.String(), "`docker exec -it <id> sh`: " + t.AnchorEcho.String(),
			fmt.Sprintf("%+.2f ms p50, %+.2f ms p99", add, t.Echo.P99-t.AnchorEcho.P99) + noisyMark(t.Echo, t.AnchorEcho),
			verdict("p50 within 1 ms of docker's", add <= 1, t.Echo, t.AnchorEcho)},
		{"7. Time to attach: `clawker exec -it <agent> sh` start → first prompt byte", t.Attach.String(),
			"`docker exec -it <id> sh`: " + t.AnchorAttach.String(), p50Ratio(t.AnchorAttach, t.Attach), "—"},
	}
	if t.ReAttachError != "" {
		rows = append(rows, row{"7. Time to attach: `clawker attach` to a running `run -dit … sh`", "not measured: " + t.ReAttachError, "—", "—", "—"})
	} else {
		rows = append(rows, row{"7. Time to attach: `clawker attach <agent>` to a running `run -dit … sh`, Enter typed at once → first byte of the redrawn prompt",
			t.ReAttach.String(), "`docker attach` to `docker run -dit … sh`: " + t.AnchorReAttach.String(), p50Ratio(t.AnchorReAttach, t.ReAttach), "—"})
	}
	return rows
}
