// Package gitcred is the host side of git credential forwarding: a unix
// socket server (started by `clawker cp up`, reached by the CP through a
// bind mount) that answers a `git credential` request by asking the
// host's own git (`git credential fill`, so the user's configured helper:
// osxkeychain, libsecret, store, gh …), and the client the CP uses.
package gitcred

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"
)

// MaxMessage bounds a request or a reply.
const MaxMessage = 64 << 10

// Attributes passed on (gitcredentials(7) protocol): a request may only
// name the target; a reply may carry the secret back.
var (
	requestKeys = map[string]bool{"protocol": true, "host": true, "path": true, "username": true}
	replyKeys   = map[string]bool{"protocol": true, "host": true, "path": true, "username": true, "password": true, "password_expiry_utc": true}
)

// errNoCredential is every failure to answer; the cause is the caller's to log.
var errNoCredential = errors.New("no credential")

// FilterRequest keeps a request's allowed attributes and insists on
// protocol and host, so the host's git is never asked a vague question.
func FilterRequest(in []byte) ([]byte, error) {
	out, seen := filter(in, requestKeys)
	if !seen["protocol"] || !seen["host"] {
		return nil, fmt.Errorf("request without protocol and host")
	}
	return out, nil
}

// FilterReply keeps a reply's allowed attributes; one without a password
// is no answer.
func FilterReply(in []byte) ([]byte, error) {
	out, seen := filter(in, replyKeys)
	if !seen["password"] {
		return nil, errNoCredential
	}
	return out, nil
}

func filter(in []byte, keys map[string]bool) ([]byte, map[string]bool) {
	var out bytes.Buffer
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(in))
	sc.Buffer(make([]byte, 0, 4096), MaxMessage)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break // end of the attribute list
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !keys[k] || seen[k] || strings.ContainsAny(v, "\x00\r") {
			continue
		}
		seen[k] = true
		fmt.Fprintf(&out, "%s=%s\n", k, v)
	}
	return out.Bytes(), seen
}

// Fill asks the host's git for a credential, never interactively.
func Fill(ctx context.Context, git string, req []byte) ([]byte, error) {
	req, err := FilterRequest(req)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, git, "credential", "fill")
	cmd.Stdin = bytes.NewReader(append(req, '\n'))
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GCM_INTERACTIVE=never", "GIT_ASKPASS=", "SSH_ASKPASS=")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("git credential fill: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return FilterReply(out.Bytes())
}

// Ask sends req to the server at sock and returns its reply; an empty
// reply (the server found nothing) is an error.
func Ask(ctx context.Context, sock string, req []byte) ([]byte, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, fmt.Errorf("dial git credential server: %w", err)
	}
	defer func() { _ = c.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write(req); err != nil {
		return nil, fmt.Errorf("send to git credential server: %w", err)
	}
	if uc, ok := c.(*net.UnixConn); ok {
		_ = uc.CloseWrite()
	}
	out, err := io.ReadAll(io.LimitReader(c, MaxMessage))
	if err != nil {
		return nil, fmt.Errorf("read from git credential server: %w", err)
	}
	if len(out) == 0 {
		return nil, errNoCredential
	}
	return FilterReply(out)
}

// Logf is where the server reports each answer or refusal.
type Logf func(format string, args ...any)

// Serve answers requests on lis until it is closed; each one runs git
// for at most timeout.
func Serve(lis net.Listener, git string, timeout time.Duration, logf Logf) error {
	for {
		c, err := lis.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer func() { _ = c.Close() }()
			_ = c.SetDeadline(time.Now().Add(timeout + 5*time.Second))
			req, err := io.ReadAll(io.LimitReader(c, MaxMessage))
			if err != nil {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			out, err := Fill(ctx, git, req)
			if err != nil {
				logf("event=git_credential_refused reason=%q", err.Error())
				return
			}
			logf("event=git_credential_answered")
			_, _ = c.Write(out)
		}()
	}
}
