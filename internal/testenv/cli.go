package testenv

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
)

// User is one clawker user: its own CLAWKER_HOME and working directory,
// driving the suite's binaries as subprocesses. Safe for concurrent use.
type User struct {
	Suite *Suite
	Home  string
	Dir   string   // working directory (where clawker.yaml is read)
	Env   []string // appended to every invocation's environment
}

// Result is one CLI invocation.
type Result struct {
	Stdout, Stderr string
	Code           int
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
}

// Command builds the CLI command with the user's environment; the suite
// label rides along in CLAWKER_LABELS so everything created is swept.
func (u *User) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, u.Suite.Bin("clawker"), args...)
	cmd.Env = append(os.Environ(), consts.EnvHome+"="+u.Home, "CLAWKER_LABELS="+u.Suite.Label)
	cmd.Env = append(cmd.Env, u.Env...)
	cmd.Dir = u.Dir
	return cmd
}

// Clawker runs the CLI (bounded to 3 minutes) and returns its output and
// exit code; Code is -1 when it could not run at all.
func (u *User) Clawker(args ...string) Result {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := u.Command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
		errb.WriteString(err.Error())
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// Must runs the CLI and returns an error on a non-zero exit.
func (u *User) Must(args ...string) (Result, error) {
	r := u.Clawker(args...)
	if r.Code != 0 {
		return r, fmt.Errorf("clawker %s: %s", strings.Join(args, " "), r)
	}
	return r, nil
}

// AgentRow is `clawker agents -o json`'s row.
type AgentRow struct {
	Agent         string    `json:"agent"`
	Project       string    `json:"project"`
	ContainerID   string    `json:"container_id"`
	Registered    bool      `json:"registered"`
	Thumbprint    string    `json:"thumbprint"`
	RegisteredAt  time.Time `json:"registered_at"`
	Session       string    `json:"session"`
	Attempts      int       `json:"attempts"`
	Trusted       bool      `json:"trusted"`
	Trust         string    `json:"trust"` // "yes" or "no (<reason>)": says why in a failure message
	LastError     string    `json:"last_error"`
	Init          string    `json:"init"`
	InitStep      string    `json:"init_step"`
	InitStepIndex int32     `json:"init_step_index"`
	InitStepCount int32     `json:"init_step_count"`
	Live          bool      `json:"live"`
}

// Agents lists the agents through the admin API.
func (u *User) Agents() ([]AgentRow, error) {
	r, err := u.Must("agents", "-o", "json")
	if err != nil {
		return nil, err
	}
	var rows []AgentRow
	if err := json.Unmarshal([]byte(r.Stdout), &rows); err != nil {
		return nil, fmt.Errorf("agents -o json: %v\n%s", err, r)
	}
	return rows, nil
}

// FindAgent returns the row for a container ID.
func FindAgent(rows []AgentRow, id string) (AgentRow, bool) {
	for _, r := range rows {
		if r.ContainerID == id {
			return r, true
		}
	}
	return AgentRow{}, false
}

// Eventually polls cond every 100ms until it returns nil, failing t when
// the deadline passes first.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	if err := WaitFor(context.Background(), timeout, 100*time.Millisecond, what, cond); err != nil {
		t.Fatal(err)
	}
}

// WaitFor polls cond every `every` until it returns nil, ctx ends or the
// timeout passes; the error carries cond's last error.
func WaitFor(ctx context.Context, timeout, every time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not true after %s: %w", what, timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %v)", what, ctx.Err(), err)
		case <-time.After(every):
		}
	}
}

// ContainerFile reads one regular file out of a container (running or not).
func ContainerFile(ctx context.Context, c *mobyclient.Client, id, path string) ([]byte, error) {
	res, err := c.CopyFromContainer(ctx, id, mobyclient.CopyFromContainerOptions{SourcePath: path})
	if err != nil {
		return nil, fmt.Errorf("copy %s from %s: %w", path, id, err)
	}
	defer res.Content.Close()
	tr := tar.NewReader(res.Content)
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("read %s from %s: %w", path, id, err)
		}
		if h.Typeflag == tar.TypeReg {
			return io.ReadAll(tr)
		}
	}
}

// ContainerLogs returns a container's stdout+stderr so far.
func ContainerLogs(ctx context.Context, c *mobyclient.Client, id string) (string, error) {
	rc, err := c.ContainerLogs(ctx, id, mobyclient.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return "", fmt.Errorf("logs %s: %w", id, err)
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil {
		return "", fmt.Errorf("logs %s: %w", id, err)
	}
	return out.String(), nil
}
