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
	"syscall"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
)

func (a *app) execCmd() *cobra.Command {
	var project, user, workdir string
	var env []string
	var interactive bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "exec [flags] AGENT -- CMD [ARG...]",
		Short: "Run a command in an agent over its control plane Session",
		Long: `exec runs a command inside an agent through the control plane's Session
with clawkerd (no docker exec). Output (stdout and stderr, merged) streams
back; clawker exits with the command's exit code.

AGENT is an agent name (with --project for project agents) or a container ID
prefix of at least 12 hex digits. With -i, stdin is forwarded; otherwise the
command's stdin is closed at once. Ctrl-C (or SIGTERM) is forwarded to the
command as SIGINT (SIGTERM); a second one abandons it and the control plane
kills it.`,
		Example: `  clawker exec dev -- uname -a
  clawker exec --project web reviewer -- sh -c 'ls /work | wc -l'
  echo hi | clawker exec -i dev -- cat`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return usageErrorf("usage: clawker exec AGENT -- CMD [ARG...]")
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
				TimeoutSeconds: uint32(timeout / time.Second)}
			return a.exec(cmd.Context(), start, interactive)
		},
	}
	cmd.Flags().StringVarP(&project, "project", "p", "", "the agent's project")
	cmd.Flags().StringVarP(&user, "user", "u", "", "numeric uid[:gid] to run as (default root)")
	cmd.Flags().StringVarP(&workdir, "workdir", "w", "", "working directory in the agent")
	cmd.Flags().StringArrayVarP(&env, "env", "e", nil, "environment variable KEY=VALUE (repeatable)")
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "forward stdin to the command")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "kill the command after this long (0 = no limit)")
	return cmd
}

func (a *app) exec(ctx context.Context, start *adminv1.ExecStart, interactive bool) error {
	ac, err := a.admin(ctx)
	if err != nil {
		return err
	}
	defer ac.Close()
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
			_ = send(&adminv1.ExecRequest{Payload: &adminv1.ExecRequest_CloseStdin{CloseStdin: true}})
			return
		}
		buf := make([]byte, 32<<10)
		for {
			n, err := a.in.Read(buf)
			if n > 0 {
				if send(&adminv1.ExecRequest{Payload: &adminv1.ExecRequest_Stdin{Stdin: append([]byte(nil), buf[:n]...)}}) != nil {
					return
				}
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
			if ctx.Err() != nil {
				return silentExit{code: 130}
			}
			return rpcError("exec", err)
		}
		switch p := res.GetPayload().(type) {
		case *adminv1.ExecResponse_Output:
			if _, err := a.out.Write(p.Output); err != nil {
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
