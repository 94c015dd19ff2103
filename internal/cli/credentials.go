package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/api/types/mount"
	mobyclient "github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/config"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/gitcred"
)

// credentialKinds is clawker.yaml's credentials: as the label/env value.
func credentialKinds(c config.Credentials) string {
	var k []string
	if c.SSHAgent {
		k = append(k, consts.CredNameSSHAgent)
	}
	if c.Git {
		k = append(k, consts.CredNameGit)
	}
	return strings.Join(k, ",")
}

// dockerDesktopSSHSock is where Docker Desktop exposes the host's
// ssh-agent to containers (its VM forwards it to the macOS/Windows agent).
const dockerDesktopSSHSock = "/run/host-services/ssh-auth.sock"

// Host-side git credential server files, in CLAWKER_HOME/run (0700).
const (
	credRunDir     = "run"
	credServerPID  = "git-credential.pid"
	credServerLog  = "git-credential.log"
	credServerWait = 10 * time.Second
)

// credSources are the CP container's credential mounts and env, decided
// by `cp up`: the host ssh-agent socket (Docker Desktop's on Desktop,
// $SSH_AUTH_SOCK otherwise) and the git credential server's directory.
// A missing source only means that kind is refused; it is reported.
func (a *app) credSources(ctx context.Context, c infoReader, h auth.Home) ([]mount.Mount, []string) {
	var mounts []mount.Mount
	var env []string
	ssh := os.Getenv("SSH_AUTH_SOCK")
	if info, err := c.Info(ctx, mobyclient.InfoOptions{}); err == nil && strings.Contains(info.Info.OperatingSystem, "Docker Desktop") {
		ssh = dockerDesktopSSHSock // a path inside Docker Desktop's VM
	} else if fi, err := os.Stat(ssh); ssh == "" || err != nil || fi.Mode()&os.ModeSocket == 0 {
		ssh = ""
	}
	if ssh != "" {
		mounts = append(mounts, mount.Mount{Type: mount.TypeBind, Source: ssh, Target: consts.CPSSHAgentSock})
		// The host path is in the env so a changed SSH_AUTH_SOCK makes
		// `cp up` recreate the CP (sameEnv).
		env = append(env, consts.EnvCPSSHAgentSock+"="+consts.CPSSHAgentSock, "CLAWKER_CP_SSH_AUTH_SOCK_HOST="+ssh)
	} // else: no ssh-agent here; opted-in agents are refused (the CP logs why)
	start := a.credServer
	if start == nil {
		start = a.startGitCredServer
	}
	dir, err := start(h)
	if err != nil {
		a.warnf(fmt.Errorf("git credential server not started (agents that opt in to credentials.git will be refused): %w", err))
		return mounts, env
	}
	mounts = append(mounts, mount.Mount{Type: mount.TypeBind, Source: dir, Target: consts.CPGitCredDir})
	env = append(env, consts.EnvCPGitCredSock+"="+consts.CPGitCredDir+"/"+consts.GitCredSockName)
	return mounts, env
}

// startGitCredServer (re)starts `clawker cp credential-server` detached,
// so the CP can ask the host's git for credentials while no CLI runs,
// and waits until its socket answers. It returns the socket's directory.
func (a *app) startGitCredServer(h auth.Home) (string, error) {
	git, err := exec.LookPath("git")
	if err != nil {
		return "", fmt.Errorf("git not found on the host: %w", err)
	}
	dir := h.Path(credRunDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	stopGitCredServer(h)
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own binary: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(dir, credServerLog), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", fmt.Errorf("open credential server log: %w", err)
	}
	defer func() { _ = logf.Close() }()
	sock := filepath.Join(dir, consts.GitCredSockName)
	cmd := exec.Command(self, "cp", "credential-server", "--socket", sock, "--git", git)
	cmd.Env = append(os.Environ(), consts.EnvHome+"="+h.Dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives this CLI and its terminal
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start credential server: %w", err)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	if err := os.WriteFile(filepath.Join(dir, credServerPID), []byte(strconv.Itoa(pid)), 0o600); err != nil {
		return "", fmt.Errorf("write pid file: %w", err)
	}
	deadline := time.Now().Add(credServerWait)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			_ = c.Close()
			return dir, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("credential server socket %s not up within %s", sock, credServerWait)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, bounded by deadline
	}
}

// stopGitCredServer ends the server a previous `cp up` started, by the
// pid it recorded (only if that pid still runs our credential-server).
func stopGitCredServer(h auth.Home) {
	pidPath := h.Path(filepath.Join(credRunDir, credServerPID))
	data, err := os.ReadFile(pidPath)
	if err != nil {
		return
	}
	_ = os.Remove(pidPath)
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return
	}
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && !strings.Contains(string(cmdline), "credential-server") {
		return // the pid was reused by something else
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
}

// cpCredServerCmd is the hidden host-side git credential server.
func (a *app) cpCredServerCmd() *cobra.Command {
	var sock, git string
	cmd := &cobra.Command{
		Use:    "credential-server",
		Short:  "Serve git credential requests from the control plane (started by cp up)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = os.Remove(sock)
			lis, err := net.Listen("unix", sock)
			if err != nil {
				return fmt.Errorf("listen %s: %w", sock, err)
			}
			if err := os.Chmod(sock, 0o600); err != nil {
				return fmt.Errorf("chmod %s: %w", sock, err)
			}
			// A server being replaced must not unlink its successor's socket
			// at the same path on its way out.
			if ul, ok := lis.(*net.UnixListener); ok {
				ul.SetUnlinkOnClose(false)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			go exitWhenReplaced(ctx, stop, sock)
			context.AfterFunc(ctx, func() { _ = lis.Close() })
			fmt.Fprintf(a.errOut, "event=git_credential_server_started socket=%s\n", sock)
			err = gitcred.Serve(lis, git, 20*time.Second, func(f string, args ...any) { fmt.Fprintf(a.errOut, f+"\n", args...) })
			if ctx.Err() != nil {
				return nil
			}
			return err
		},
	}
	cmd.Flags().StringVar(&sock, "socket", "", "unix socket to serve")
	cmd.Flags().StringVar(&git, "git", "git", "host git binary")
	return cmd
}

// exitWhenReplaced ends the server once its socket is gone or another
// server's took its place (clawker home removed, a newer cp up), so no
// orphan outlives what it served.
func exitWhenReplaced(ctx context.Context, stop context.CancelFunc, sock string) {
	mine, err := os.Stat(sock)
	if err != nil {
		stop()
		return
	}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if now, err := os.Stat(sock); err != nil || !os.SameFile(mine, now) {
				stop()
				return
			}
		}
	}
}
