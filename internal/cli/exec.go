package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
)

func (a *app) execCmd() *cobra.Command {
	var project, user, workdir string
	var env []string
	var interactive, tty, allowUntrusted bool
	var timeout, wait time.Duration
	cmd := &cobra.Command{
		Use:   "exec [flags] AGENT -- CMD [ARG...]",
		Short: "Run a command in an agent over its control plane Session",
		Long: `exec runs a command inside an agent through the control plane's Session
with clawkerd (no docker exec). Its stdout and stderr stream back to
clawker's stdout and stderr; clawker exits with the command's exit code.
(An agent created by an older clawker merges stderr into stdout.)

With -t the command runs on a pseudo-terminal sized like yours, with your
TERM; -it makes an interactive shell: your terminal is put in raw mode
(keys, Ctrl-C included, go to the command), window resizes follow, and the
terminal is restored however exec ends.

AGENT is an agent name (with --project for project agents) or a container ID
prefix of at least 12 hex digits. With -i, stdin is forwarded; otherwise the
command's stdin is closed at once; stdin is paced by the agent (the CLI
reads it only as fast as the command consumes it), so any amount can be
piped. An agent without a live Session (e.g. its network was just
reconnected) fails the exec at once, unless --wait gives it time to come
back. Ctrl-C (or SIGTERM) is forwarded to the
command as SIGINT (SIGTERM); a second one abandons it and the control plane
kills it.

The control plane sends the command, its -e values and stdin only to an
agent it trusts (TRUSTED "yes" in clawker agents: a live Session that
matched the agent's registry row, with no findings). Otherwise exec is
refused and exits 126. --allow-untrusted runs it anyway, for forensics:
it warns, and the control plane writes it to its audit log. A Session whose
peer failed the control plane's certificate pin (CA chain and container ID)
is observation-only and refuses even then.

As docker exec does, the command runs by default as the agent's user
(CLAWKER_USER, else the image USER) with that user's HOME and supplementary
groups, in the image WORKDIR. -u takes a user name or uid[:gid], resolved
against the container's /etc/passwd and /etc/group; -w sets the directory.`,
		Example: `  clawker exec -it dev -- sh
  clawker exec dev -- uname -a
  clawker exec --project web reviewer -- sh -c 'ls /work | wc -l'
  echo hi | clawker exec -i dev -- cat
  clawker exec -u root -w /etc dev -- ls
  clawker exec --allow-untrusted --project web reviewer -- ps aux`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return usageErrorf("usage: clawker exec AGENT -- CMD [ARG...]")
			}
			if wait < 0 || timeout < 0 {
				return usageErrorf("--wait and --timeout take a positive duration")
			}
			ref, err := agentRef(project, args[0])
			if err != nil {
				return err
			}
			envMap := map[string]string{}
			kvs, err := parseEnv(env)
			if err != nil {
				return err
			}
			for _, kv := range kvs {
				k, v, _ := strings.Cut(kv, "=")
				envMap[k] = v
			}
			start := &adminv1.ExecStart{Agent: ref, Argv: args[1:], Env: envMap, Cwd: workdir, User: user,
				TimeoutSeconds: uint32(timeout / time.Second), AllowUntrusted: allowUntrusted,
				WaitMillis: uint32(wait / time.Millisecond), Tty: tty, SeparateStderr: !tty}
			if allowUntrusted {
				fmt.Fprint(a.errOut, untrustedWarning)
			}
			return a.exec(cmd.Context(), start, &execIO{interactive: interactive})
		},
	}
	cmd.Flags().StringVarP(&project, "project", "p", "", "the agent's project")
	cmd.Flags().StringVarP(&user, "user", "u", "", "user name or uid[:gid] in the container (default: the agent's user)")
	cmd.Flags().StringVarP(&workdir, "workdir", "w", "", "working directory in the agent (default: the image WORKDIR)")
	cmd.Flags().StringArrayVarP(&env, "env", "e", nil, "environment variable KEY=VALUE (repeatable)")
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "forward stdin to the command")
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "run the command on a pseudo-terminal (with -i: an interactive shell)")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "kill the command after this long (0 = no limit)")
	cmd.Flags().BoolVar(&allowUntrusted, "allow-untrusted", false, "forensics: run even if the agent is not trusted (warns; audit-logged by the control plane)")
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for the agent's Session when it is not connected (0 = fail at once)")
	return cmd
}

// execIO is how an exec or attach meets the operator's terminal.
type execIO struct {
	interactive bool
	detachKeys  []byte // with interactive: this typed sequence detaches
	// Set by exec: the resolved container, and whether the operator
	// detached (the exec then returns nil).
	containerID string
	detached    atomic.Bool
}

func (a *app) exec(ctx context.Context, start *adminv1.ExecStart, eio *execIO) error {
	interactive := eio.interactive
	ac, err := a.admin(ctx)
	if err != nil {
		return err
	}
	defer ac.Close()
	var lt *localTerminal
	if start.GetTty() {
		if lt, err = openLocalTerminal(a.in, a.out, interactive); err != nil {
			return fmt.Errorf("exec: terminal: %w", err)
		}
		defer lt.restore()
		start.TtyRows, start.TtyCols = lt.size()
		start.Term = os.Getenv("TERM")
	}
	// The stream outlives the first Ctrl-C: signals are forwarded to the
	// remote command (SIGINT, SIGTERM); a second one abandons it (the CP
	// then kills it).
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	stream, err := ac.Exec(ctx)
	if err != nil {
		return rpcError("exec", err)
	}
	if err := stream.Send(&adminv1.ExecRequest{Payload: &adminv1.ExecRequest_Start{Start: start}}); err != nil {
		return rpcError("exec", err)
	}
	var sendMu sync.Mutex // gRPC streams allow one concurrent sender
	send := func(r *adminv1.ExecRequest) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(r)
	}
	if lt != nil {
		lt.watchResize(ctx, func(rows, cols uint32) {
			_ = send(&adminv1.ExecRequest{Payload: &adminv1.ExecRequest_Resize{Resize: &adminv1.ExecResize{Rows: rows, Cols: cols}}})
		})
	}
	go func() {
		forwarded := false
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-sigs:
				if forwarded {
					cancel()
					return
				}
				forwarded = true
				signo := int32(syscall.SIGINT)
				if sig == syscall.SIGTERM {
					signo = int32(syscall.SIGTERM)
				}
				_ = send(&adminv1.ExecRequest{Payload: &adminv1.ExecRequest_Signal{Signal: signo}})
			}
		}
	}()
	go func() {
		if !interactive {
			if !start.GetAttach() { // an attach's CloseStdin detaches it
				_ = send(&adminv1.ExecRequest{Payload: &adminv1.ExecRequest_CloseStdin{CloseStdin: true}})
			}
			return
		}
		in := a.in
		if len(eio.detachKeys) > 0 {
			in = &detachReader{r: a.in, keys: eio.detachKeys}
		}
		stop := make(chan struct{})
		defer close(stop)
		b := &stdinBatcher{reads: readStdin(in, stop)}
		for {
			data, err, ok := b.next()
			if !ok {
				return
			}
			if len(data) > 0 {
				if send(&adminv1.ExecRequest{Payload: &adminv1.ExecRequest_Stdin{Stdin: data}}) != nil {
					return
				}
			}
			if errors.Is(err, errDetached) {
				eio.detached.Store(true)
				cancel() // the CP closes the stream: an attach detaches
				return
			}
			if err != nil {
				_ = send(&adminv1.ExecRequest{Payload: &adminv1.ExecRequest_CloseStdin{CloseStdin: true}})
				return
			}
		}
	}()
	for {
		res, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("exec: the control plane ended the stream without an exit code")
		}
		if err != nil {
			if eio.detached.Load() {
				return nil
			}
			if ctx.Err() != nil {
				return silentExit{code: 130}
			}
			if refused, ok := untrustedRefusal(err, start.GetAllowUntrusted()); ok {
				return refused
			}
			return rpcError("exec", err)
		}
		switch p := res.GetPayload().(type) {
		case *adminv1.ExecResponse_ContainerId:
			eio.containerID = p.ContainerId
		case *adminv1.ExecResponse_Output:
			if _, err := a.out.Write(p.Output); err != nil {
				return err
			}
		case *adminv1.ExecResponse_Stderr:
			if _, err := a.errOut.Write(p.Stderr); err != nil {
				return err
			}
		case *adminv1.ExecResponse_ExitCode:
			if p.ExitCode != 0 {
				code := int(p.ExitCode)
				if code < 0 || code > 255 {
					code = 255
				}
				return silentExit{code: code}
			}
			return nil
		case *adminv1.ExecResponse_Error:
			return fmt.Errorf("exec: %s", p.Error)
		}
	}
}
