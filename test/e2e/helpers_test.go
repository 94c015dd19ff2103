package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
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
	t.Cleanup(func() { sweep(context.Background(), suite.docker, true) })
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
	r := e.must("agents", "-o", "json")
	var rows []agentRow
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		e.t.Fatalf("agents -o json: %v\n%s", err, r)
	}
	return rows
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// containerFile reads one file out of a container (running or not).
func containerFile(t *testing.T, id, path string) []byte {
	t.Helper()
	res, err := suite.docker.CopyFromContainer(context.Background(), id, mobyclient.CopyFromContainerOptions{SourcePath: path})
	if err != nil {
		t.Fatalf("copy %s from %s: %v", path, id, err)
	}
	defer res.Content.Close()
	tr := tar.NewReader(res.Content)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("read %s from %s: %v", path, id, err)
		}
		if h.Typeflag == tar.TypeReg {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return data
		}
	}
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
	rc, err := suite.docker.ContainerLogs(context.Background(), id, mobyclient.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatalf("logs %s: %v", id, err)
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil {
		t.Fatalf("logs %s: %v", id, err)
	}
	return out.String()
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
