package clawkerd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// Credential sockets inside the agent. SSH_AUTH_SOCK points at the first;
// `clawkerd credential` (git's helper) talks to the second. Neither holds
// any secret: each question goes to the CP, which answers from the host.
const (
	DefaultCredSocketDir = "/run/clawker/creds"
	sshAgentSocketName   = "ssh-agent.sock"
	gitCredSocketName    = "git-credential.sock"
	// EnvGitCredSocket overrides the git socket for `clawkerd credential`.
	EnvGitCredSocket = "CLAWKER_GIT_CREDENTIAL_SOCK"
)

// Bounds on one question: an ssh-agent message (a sign request carries the
// data to sign, a few KiB for ssh) and a git credential request.
const (
	maxSSHAgentMsg = 256 << 10
	maxGitCredMsg  = 64 << 10
	credConnIdle   = 5 * time.Minute
)

// sshAgentFailure is SSH_AGENT_FAILURE (draft-miller-ssh-agent §5.1).
var sshAgentFailure = []byte{5}

// credEnv is what every process clawkerd starts sees when kinds are on:
// SSH_AUTH_SOCK, and git's credential.helper through GIT_CONFIG_* (after
// any the image already sets), naming clawkerd itself as the helper.
func credEnv(dir, self string, kinds []clawkerdv1.CredKind, getenv func(string) string) map[string]string {
	env := map[string]string{}
	for _, k := range kinds {
		switch k {
		case clawkerdv1.CredKind_CRED_KIND_SSH_AGENT:
			env["SSH_AUTH_SOCK"] = filepath.Join(dir, sshAgentSocketName)
		case clawkerdv1.CredKind_CRED_KIND_GIT:
			n, _ := strconv.Atoi(getenv("GIT_CONFIG_COUNT"))
			if n < 0 {
				n = 0
			}
			env[fmt.Sprintf("GIT_CONFIG_KEY_%d", n)] = "credential.helper"
			env[fmt.Sprintf("GIT_CONFIG_VALUE_%d", n)] = self + " credential"
			env["GIT_CONFIG_COUNT"] = strconv.Itoa(n + 1)
			env[EnvGitCredSocket] = filepath.Join(dir, gitCredSocketName)
		}
	}
	return env
}

// serveCredSockets listens on the sockets for kinds until ctx ends. A
// socket that cannot be made degrades that kind only (logged).
func (r *credRelay) serveCredSockets(ctx context.Context, dir string, kinds []clawkerdv1.CredKind) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.log.Error().Str("event", "cred_socket_failed").Err(err).Msg("credential socket dir")
		return
	}
	for _, k := range kinds {
		name, handle := sshAgentSocketName, r.serveSSHAgentConn
		if k == clawkerdv1.CredKind_CRED_KIND_GIT {
			name, handle = gitCredSocketName, r.serveGitConn
		}
		path := filepath.Join(dir, name)
		_ = os.Remove(path) // a stale socket from before a restart
		lis, err := net.Listen("unix", path)
		if err == nil {
			// The container is the agent's trust unit: any of its users
			// may ask, as they could with a forwarded agent over ssh -A.
			err = os.Chmod(path, 0o666)
		}
		if err != nil {
			r.log.Error().Str("event", "cred_socket_failed").Str("socket", path).Err(err).Msg("credential socket")
			continue
		}
		context.AfterFunc(ctx, func() { _ = lis.Close() })
		go r.acceptLoop(ctx, lis, handle)
	}
}

func (r *credRelay) acceptLoop(ctx context.Context, lis net.Listener, handle func(context.Context, net.Conn)) {
	defer recoverLog(r.log, "cred_accept")
	for {
		c, err := lis.Accept()
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn().Str("event", "cred_accept_failed").Err(err).Msg("credential socket closed")
			}
			return
		}
		go func() {
			defer recoverLog(r.log, "cred_conn")
			defer func() { _ = c.Close() }()
			handle(ctx, c)
		}()
	}
}

// serveSSHAgentConn relays length-prefixed ssh-agent messages one by one;
// a refused one is answered SSH_AGENT_FAILURE, as a real agent would.
func (r *credRelay) serveSSHAgentConn(ctx context.Context, c net.Conn) {
	var hdr [4]byte
	for {
		_ = c.SetDeadline(time.Now().Add(credConnIdle))
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 || n > maxSSHAgentMsg {
			return
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		reply, err := r.ask(ctx, clawkerdv1.CredKind_CRED_KIND_SSH_AGENT, msg)
		if err != nil || len(reply) == 0 || len(reply) > maxSSHAgentMsg {
			reply = sshAgentFailure
		}
		binary.BigEndian.PutUint32(hdr[:], uint32(len(reply)))
		if _, err := c.Write(append(hdr[:], reply...)); err != nil {
			return
		}
	}
}

// serveGitConn reads one `git credential` request (to EOF), relays it and
// writes the answer; a refusal writes nothing (git then has no credential).
func (r *credRelay) serveGitConn(ctx context.Context, c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(credAskTimeout + 5*time.Second))
	req, err := io.ReadAll(io.LimitReader(c, maxGitCredMsg+1))
	if err != nil || len(req) > maxGitCredMsg {
		return
	}
	reply, err := r.ask(ctx, clawkerdv1.CredKind_CRED_KIND_GIT, req)
	if err != nil {
		return
	}
	_, _ = c.Write(reply)
}

// CredentialHelper is `clawkerd credential <op>`, git's credential helper
// protocol (gitcredentials(7)): get relays the request to clawkerd's git
// socket; store and erase are accepted and ignored (nothing is kept in
// the agent). It always exits 0: no answer means no credential.
func CredentialHelper(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: clawkerd credential get|store|erase")
		return 2
	}
	req, err := io.ReadAll(io.LimitReader(stdin, maxGitCredMsg))
	if err != nil || args[0] != "get" {
		return 0
	}
	path := getenv(EnvGitCredSocket)
	if path == "" {
		path = filepath.Join(DefaultCredSocketDir, gitCredSocketName)
	}
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return 0
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(credAskTimeout + 10*time.Second))
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0
	}
	if _, err := uc.Write(req); err != nil {
		return 0
	}
	_ = uc.CloseWrite()
	if _, err := io.Copy(stdout, io.LimitReader(uc, maxGitCredMsg)); err != nil && !errors.Is(err, io.EOF) {
		return 0
	}
	return 0
}
