package soak

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv"
)

// env is one isolated clawker user (a testenv.User: its own home and
// project dir) plus the test it reports to.
type env struct {
	t *testing.T
	testenv.User
}

// initCountFile is where the suite's post-init hook appends one line per
// run, so a second run of the one-time init is visible in the container.
const initCountFile = "/tmp/soak-post-init"

// hooksYAML makes post-init count its runs.
const hooksYAML = "hooks:\n  post-init: |\n    echo ran >> " + initCountFile + "\n"

func newEnv(t *testing.T) *env {
	t.Helper()
	requireSuite(t)
	sweep(context.Background())
	e := &env{t: t, User: testenv.User{Suite: suite.env, Home: t.TempDir(), Dir: t.TempDir()}}
	if err := os.WriteFile(filepath.Join(e.Dir, "clawker.yaml"), []byte(hooksYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sweep(context.Background()) })
	return e
}

// result is one CLI invocation.
type result = testenv.Result

func (e *env) command(ctx context.Context, args ...string) *exec.Cmd { return e.Command(ctx, args...) }

// clawker runs the CLI with args and returns its output and exit code. It
// is safe for concurrent use.
func (e *env) clawker(args ...string) result { return e.Clawker(args...) }

// must runs the CLI and fails the test on a non-zero exit. Call it only
// from the test goroutine.
func (e *env) must(args ...string) result {
	e.t.Helper()
	r := e.clawker(args...)
	if r.Code != 0 {
		e.t.Fatalf("clawker %s: %s", strings.Join(args, " "), r)
	}
	return r
}

type agentRow = testenv.AgentRow

func (e *env) agentsErr() ([]agentRow, error) { return e.Agents() }

func (e *env) agents() []agentRow {
	e.t.Helper()
	rows, err := e.agentsErr()
	if err != nil {
		e.t.Fatal(err)
	}
	return rows
}

// run creates and starts one detached agent and returns its container ID.
func (e *env) run(project, agent string, cmd ...string) (string, error) {
	args := append([]string{"run", "-d", "--project", project, "--agent", agent, agentImage}, cmd...)
	r := e.clawker(args...)
	if r.Code != 0 {
		return "", fmt.Errorf("clawker %s: %s", strings.Join(args, " "), r)
	}
	return strings.TrimSpace(r.Stdout), nil
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	testenv.Eventually(t, timeout, what, cond)
}

// containerFile reads one file out of a container (running or not); a
// missing file is an error.
func containerFile(ctx context.Context, id, path string) ([]byte, error) {
	return testenv.ContainerFile(ctx, suite.docker, id, path)
}

// liveAgents returns the IDs of the running agent containers of this suite.
func liveAgents(ctx context.Context) (map[string]bool, error) {
	f := make(mobyclient.Filters).Add("label", testLabel).Add("label", consts.LabelPurpose+"="+consts.PurposeAgent)
	res, err := suite.docker.ContainerList(ctx, mobyclient.ContainerListOptions{Filters: f})
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, c := range res.Items {
		ids[c.ID] = true
	}
	return ids, nil
}

// checkRegistryMatchesLive is the end-state invariant of every suite: the
// registry holds exactly one row per running agent container, no row for
// anything else, no duplicate identity, and every live agent has a
// connected, trusted Session with its init completed.
func checkRegistryMatchesLive(rows []agentRow, live map[string]bool) error {
	seenID := map[string]bool{}
	seenName := map[string]bool{}
	for _, r := range rows {
		if !r.Registered {
			if live[r.ContainerID] {
				return fmt.Errorf("live agent %s (%s/%s) has no registry row", r.ContainerID[:12], r.Project, r.Agent)
			}
			continue
		}
		if seenID[r.ContainerID] {
			return fmt.Errorf("container %s has two registry rows", r.ContainerID[:12])
		}
		seenID[r.ContainerID] = true
		name := r.Project + "/" + r.Agent
		if seenName[name] {
			return fmt.Errorf("agent %s registered twice", name)
		}
		seenName[name] = true
		if !live[r.ContainerID] {
			return fmt.Errorf("registry row for %s (%s) whose container is not running", r.ContainerID[:12], name)
		}
		if r.Session != "connected" || !r.Trusted || r.Init != "completed" {
			return fmt.Errorf("agent %s: session=%s trusted=%v init=%s", name, r.Session, r.Trusted, r.Init)
		}
	}
	for id := range live {
		if !seenID[id] {
			return fmt.Errorf("live agent container %s has no registry row", id[:12])
		}
	}
	return nil
}

// cpHealthAddr is the CP's published health address (it changes when the
// container restarts: Docker picks the port).
func (e *env) cpHealthAddr() (string, error) {
	r := e.clawker("cp", "status", "-o", "json")
	var st struct {
		HealthAddr string `json:"health_addr"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil || st.HealthAddr == "" {
		return "", fmt.Errorf("cp status -o json: %v %s", err, r)
	}
	return st.HealthAddr, nil
}

func httpGet(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return "", err
	}
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, res.Status)
	}
	return string(b), nil
}

// metrics scrapes /metrics and returns every sample by its full series
// name (with labels, as printed).
func (e *env) metrics() (map[string]float64, error) {
	addr, err := e.cpHealthAddr()
	if err != nil {
		return nil, err
	}
	body, err := httpGet(context.Background(), "http://"+addr+"/metrics")
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, nil
}

// waitReady waits until /healthz reports ready.
func (e *env) waitReady(timeout time.Duration) {
	e.t.Helper()
	eventually(e.t, timeout, "control plane ready", func() error {
		addr, err := e.cpHealthAddr()
		if err != nil {
			return err
		}
		hz, err := httpGet(context.Background(), "http://"+addr+"/healthz")
		if err != nil {
			return err
		}
		if !strings.Contains(hz, `"ready":true`) {
			return fmt.Errorf("healthz: %s", hz)
		}
		return nil
	})
}

// killCP sends SIGKILL to the CP container, then starts it again (the
// restart policy may already have), and waits until it is ready.
func (e *env) killCP() {
	e.t.Helper()
	ctx := context.Background()
	if _, err := suite.docker.ContainerKill(ctx, consts.ControlPlaneContainer, mobyclient.ContainerKillOptions{Signal: "KILL"}); err != nil {
		e.t.Fatalf("kill -9 the control plane: %v", err)
	}
	eventually(e.t, 30*time.Second, "control plane container stopped or restarted", func() error {
		_, err := suite.docker.ContainerStart(ctx, consts.ControlPlaneContainer, mobyclient.ContainerStartOptions{})
		if err == nil {
			return nil
		}
		res, ierr := suite.docker.ContainerInspect(ctx, consts.ControlPlaneContainer, mobyclient.ContainerInspectOptions{})
		if ierr == nil && res.Container.State != nil && res.Container.State.Running {
			return nil
		}
		return err
	})
	e.waitReady(90 * time.Second)
}

// copyIntoContainer writes one executable file at dst (an absolute path)
// in a container's filesystem.
func copyIntoContainer(ctx context.Context, id, src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(dst, "/"), Mode: 0o755, Size: int64(len(data))}); err != nil {
		return err
	}
	if _, err := tw.Write(data); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	_, err = suite.docker.CopyToContainer(ctx, id, mobyclient.CopyToContainerOptions{DestinationPath: "/", Content: &buf})
	return err
}

func formatRows(rows []agentRow) string {
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "  %s %s/%s registered=%v session=%s trusted=%v init=%s live=%v\n",
			r.ContainerID[:12], r.Project, r.Agent, r.Registered, r.Session, r.Trusted, r.Init, r.Live)
	}
	return b.String()
}

// cpLogMatching returns the last n CP log lines holding any of subs.
func (e *env) cpLogMatching(n int, subs ...string) string {
	r := e.clawker("cp", "logs")
	var keep []string
	for _, line := range strings.Split(r.Stdout+r.Stderr, "\n") {
		for _, s := range subs {
			if strings.Contains(line, s) {
				keep = append(keep, line)
				break
			}
		}
	}
	return strings.Join(keep[max(0, len(keep)-n):], "\n")
}

// cpLogFor returns the CP log lines that mention a container ID.
func (e *env) cpLogFor(id string) string {
	r := e.clawker("cp", "logs")
	var b strings.Builder
	for _, line := range strings.Split(r.Stdout+r.Stderr, "\n") {
		if strings.Contains(line, id) || strings.Contains(line, id[:12]) {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// logUnregistered says, for each running agent without a registry row,
// what the CP and its clawkerd logged about it: the CP's last lines of
// it and the agent's own last lines (its Register, its assertion).
func (e *env) logUnregistered(ctx context.Context) {
	live, err := liveAgents(ctx)
	if err != nil {
		e.t.Logf("list agents: %v", err)
		return
	}
	rows, err := e.agentsErr()
	if err != nil {
		e.t.Logf("clawker agents: %v", err)
		return
	}
	tail := func(s string, n int) string {
		lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
		return strings.Join(lines[max(0, len(lines)-n):], "\n")
	}
	for _, r := range rows {
		if r.Registered || !live[r.ContainerID] {
			continue
		}
		agentLog, err := testenv.ContainerLogs(ctx, suite.docker, r.ContainerID)
		if err != nil {
			agentLog = err.Error()
		}
		e.t.Logf("unregistered %s (%s/%s)\nCP log of it:\n%s\nits own log:\n%s", r.ContainerID[:12], r.Project, r.Agent,
			tail(e.cpLogFor(r.ContainerID), 40), tail(agentLog, 40))
	}
}
