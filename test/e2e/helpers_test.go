package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv"
)

// env is one isolated clawker user: its own home, driving the suite's
// binaries as subprocesses.
type env struct {
	t    *testing.T
	home string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	requireSuite(t)
	e := &env{t: t, home: t.TempDir()}
	t.Cleanup(func() { suite.env.Sweep(context.Background(), true) })
	return e
}

// result is one CLI invocation.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// clawker runs the CLI with args and returns its output and exit code.
func (e *env) clawker(args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(suite.binDir, "clawker"), args...)
	cmd.Env = append(os.Environ(),
		consts.EnvHome+"="+e.home,
		"CLAWKER_LABELS="+testLabel,
	)
	cmd.Dir = e.t.TempDir() // no stray clawker.yaml
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("clawker %v: %v", args, err)
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// must runs the CLI and fails the test on a non-zero exit.
func (e *env) must(args ...string) result {
	e.t.Helper()
	r := e.clawker(args...)
	if r.code != 0 {
		e.t.Fatalf("clawker %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// agentRow is the subset of `clawker agents -o json` the tests check.
type agentRow struct {
	Agent         string `json:"agent"`
	Project       string `json:"project"`
	ContainerID   string `json:"container_id"`
	Registered    bool   `json:"registered"`
	Thumbprint    string `json:"thumbprint"`
	Session       string `json:"session"`
	Trusted       bool   `json:"trusted"`
	Init          string `json:"init"`
	Live          bool   `json:"live"`
	InitStepCount int32  `json:"init_step_count"`
}

func (e *env) agents() []agentRow {
	e.t.Helper()
	r := e.must("agents", "-a", "-o", "json") // -a: stopped agents too, as before -a existed
	var rows []agentRow
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		e.t.Fatalf("agents -o json: %v\n%s", err, r)
	}
	return rows
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	testenv.Eventually(t, timeout, what, cond)
}

// containerFile reads one file out of a container (running or not).
func containerFile(t *testing.T, id, path string) []byte {
	t.Helper()
	b, err := testenv.ContainerFile(context.Background(), suite.docker, id, path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// certThumbprint is the hex SHA-256 over the DER of a PEM cert.
func certThumbprint(t *testing.T, pemBytes []byte) string {
	t.Helper()
	b, _ := pem.Decode(pemBytes)
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", pemBytes)
	}
	sum := sha256.Sum256(b.Bytes)
	return hex.EncodeToString(sum[:])
}

// containerLogs returns a container's stdout+stderr so far.
func containerLogs(t *testing.T, id string) string {
	t.Helper()
	out, err := testenv.ContainerLogs(context.Background(), suite.docker, id)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func findAgent(rows []agentRow, id string) (agentRow, bool) {
	for _, r := range rows {
		if r.ContainerID == id {
			return r, true
		}
	}
	return agentRow{}, false
}

// mobyInspect is the part of an inspect the containment checks read.
type mobyInspect struct {
	NetworkSettings *container.NetworkSettings
	State           *container.State
}
