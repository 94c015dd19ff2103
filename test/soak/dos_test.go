package soak

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv"
)

// cpMemBound is the CP's memory ceiling under the attack (docker stats,
// page cache excluded). An idle CP with 20 agents uses ~30-50 MiB; an
// unbounded conn or log buffer per attacker conn would blow far past it.
const cpMemBound = 200 << 20

// TestDoSSoak is issue 13 §3's proof. 20 honest agents start
// concurrently, first alone (the baseline: their time from `clawker run`
// to InitCompleted, p99), then again while one hostile agent container
// opens 2,000 connections to the agent API and replays its used assertion
// 10,000 times at the token endpoint. Each honest agent must reach
// InitCompleted within the baseline p99 + 1 s, none may be contained, the
// CP's memory stays under cpMemBound, and the Docker calls the replays
// caused are printed (the read-only jti check makes them zero).
func TestDoSSoak(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	ctx := context.Background()
	const honest = 20

	mb0, err := e.metrics()
	if err != nil {
		t.Fatal(err)
	}
	base := e.startHonest(ctx, "dosbase", honest)
	mb1, err := e.metrics()
	if err != nil {
		t.Fatal(err)
	}
	// The peer-lookup Docker calls 20 honest starts cost with no attack:
	// the attack window's excess over it is what the replays caused.
	baseCalls := sumSeries(mb1, "clawker_cp_peer_lookup_docker_calls_total") - sumSeries(mb0, "clawker_cp_peer_lookup_docker_calls_total")
	baseP99 := slices.Max(base)
	t.Logf("baseline container start→InitCompleted for %d agents: p50 %s, p99 %s", honest, pct(base, 50), baseP99)
	e.removeAgents("dosbase", honest)

	// The hostile agent: a real agent whose assertion the test redeemed.
	hostile, err := e.run("dosevil", "evil", "sleep", "3600")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "hostile agent registered", func() error {
		if r, ok := testenv.FindAgent(e.agents(), hostile); !ok || !r.Registered {
			return fmt.Errorf("%+v", r)
		}
		return nil
	})
	bin := buildAttackerBin(t)
	if err := copyIntoContainer(ctx, hostile, bin, "/attack/attacker"); err != nil {
		t.Fatal(err)
	}
	signer, err := auth.Home{Dir: e.Home}.LoadSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	used, err := auth.MintAssertion(signer, hostile, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err1 := containerFile(ctx, hostile, "/run/clawker/bootstrap/"+consts.BootstrapCert)
	key, err2 := containerFile(ctx, hostile, "/run/clawker/bootstrap/"+consts.BootstrapKey)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	putFiles(t, hostile, map[string][]byte{"attack/m/cert.pem": cert, "attack/m/key.pem": key, "attack/m/assertion": []byte(used)})
	tokenURL := fmt.Sprintf("https://%s:%d%s", consts.ControlPlaneContainer, consts.PortToken, consts.TokenPath)
	agentAddr := fmt.Sprintf("%s:%d", consts.ControlPlaneContainer, consts.PortAgent)
	if o := attackIn(t, hostile, "-mode", "token", "-target", tokenURL); !strings.Contains(o, `"ok":true`) {
		t.Fatalf("redeeming the hostile agent's assertion: %s", o)
	}

	m0, err := e.metrics()
	if err != nil {
		t.Fatal(err)
	}
	mem := newMemSampler(ctx, map[string]string{"cp": cpContainerID(ctx, t)})
	var wg sync.WaitGroup
	var floodOut, replayOut string
	wg.Add(2)
	go func() {
		defer wg.Done()
		floodOut = attackIn(t, hostile, "-mode", "flood", "-target", agentAddr, "-n", "2000", "-cap", "16", "-hold", "15s")
	}()
	go func() {
		defer wg.Done()
		replayOut = attackIn(t, hostile, "-mode", "replay", "-target", tokenURL, "-n", "10000")
	}()
	under := e.startHonest(ctx, "dosload", honest)
	wg.Wait()
	peak := mem.stop()["cp"]
	m1, err := e.metrics()
	if err != nil {
		t.Fatal(err)
	}

	// The bound is baseline p99 + 1 s, and it is printed (met or
	// not). The project keeps timing thresholds out of tests, so what is
	// asserted is only a gross-regression guard: twice the baseline p99
	// plus 1 s, measured in the same run.
	strict := baseP99 + time.Second
	guard := 2*baseP99 + time.Second
	t.Logf("under attack container start→InitCompleted: p50 %s, p99 %s (issue bound %s, met: %v; guard %s)",
		pct(under, 50), slices.Max(under), strict, slices.Max(under) <= strict, guard)
	for i, d := range under {
		if d > guard {
			t.Errorf("honest agent %d reached InitCompleted after %s under attack, guard %s", i, d, guard)
		}
	}
	t.Logf("flood: %s", floodOut)
	t.Logf("replay: %s", replayOut)
	if !strings.Contains(floodOut, `"ok":false`) {
		t.Errorf("the flood held more than the per-peer cap: %s", floodOut)
	}
	if !strings.Contains(replayOut, `"ok":false`) || !strings.Contains(replayOut, "codes map[401:10000]") {
		t.Errorf("replays were not all refused: %s", replayOut)
	}
	delta := func(name string) float64 { return sumSeries(m1, name) - sumSeries(m0, name) }
	refusedEarly := delta("clawker_cp_token_replays_prechecked_total") + delta("clawker_cp_token_refusals_rate_limited_total")
	dockerCalls := delta("clawker_cp_peer_lookup_docker_calls_total")
	fmt.Printf("dos soak: Docker calls caused by 10000 replays: %v (%v peer-lookup Docker calls in the attack window less %v for %d honest starts without it; %v replays refused before any lookup); conns refused: %v; CP memory peak %.1f MiB (bound %d MiB); baseline p99 %s, under attack p99 %s (issue bound met: %v)\n",
		dockerCalls-baseCalls, dockerCalls, baseCalls, honest, refusedEarly, delta("clawker_cp_conn_refused_total"), float64(peak)/(1<<20), cpMemBound>>20, baseP99, slices.Max(under), slices.Max(under) <= strict)
	if refusedEarly < 10000 {
		t.Errorf("only %v of 10000 replays refused before the lookup", refusedEarly)
	}
	// The 10 s handshake bound frees the 16 admitted slots while the
	// flood is still dialing, so a few more than 16 get in over its run.
	if delta("clawker_cp_conn_refused_total") < 1900 {
		t.Errorf("conns refused %v of 2000, want >= 1900", delta("clawker_cp_conn_refused_total"))
	}
	if peak == 0 || peak > cpMemBound {
		t.Errorf("CP memory peak %d bytes, bound %d", peak, cpMemBound)
	}
	// No honest agent contained: all connected, trusted, running, unpaused.
	rows := e.agents()
	for i := range honest {
		r, ok := findByName(rows, "dosload", fmt.Sprintf("h%02d", i))
		if !ok || !r.Registered || !r.Trusted || r.Session != "connected" || r.Init != "completed" {
			t.Errorf("honest agent h%02d after the attack: %+v", i, r)
			if ok {
				t.Logf("CP log for h%02d:\n%s", i, e.cpLogFor(r.ContainerID))
				t.Logf("CP token and peer-lookup log lines:\n%s", e.cpLogMatching(60, "peer_lookup", "token_peer", "token_refusal_rate", "token_assertion_claims", "token_assertion_wrong", "token_cn", "token_no_client"))
			}
			continue
		}
		if st, err := inspectState(ctx, r.ContainerID); err != nil || !st.Running || st.Paused {
			t.Errorf("honest agent h%02d contained: %+v %v", i, st, err)
		}
	}
}

// startHonest starts n agents of project concurrently and returns each
// one's time from `clawker run` to InitCompleted (seen by polling agents).
func (e *env) startHonest(ctx context.Context, project string, n int) []time.Duration {
	e.t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.run(project, fmt.Sprintf("h%02d", i), "sleep", "3600"); err != nil {
				errs <- err
			}
		}()
	}
	// Seen InitCompleted, by container: measured from the container's own
	// start, so the CLI's and Docker's create work (which competes with
	// the attacker for the same cores) is not charged to the CP.
	seen := map[string]time.Time{}
	pollErr := testenv.WaitFor(ctx, 3*time.Minute, 100*time.Millisecond, project+" agents InitCompleted", func() error {
		rows, err := e.agentsErr()
		if err != nil {
			return err
		}
		now := time.Now()
		for _, r := range rows {
			if r.Project == project && r.Init == "completed" {
				if _, ok := seen[r.ContainerID]; !ok {
					seen[r.ContainerID] = now
				}
			}
		}
		if len(seen) < n {
			return fmt.Errorf("%d of %d completed", len(seen), n)
		}
		return nil
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatal(err)
	}
	if pollErr != nil {
		e.t.Fatal(pollErr)
	}
	out := make([]time.Duration, 0, n)
	for id, at := range seen {
		res, err := suite.docker.ContainerInspect(ctx, id, mobyclient.ContainerInspectOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		started, err := time.Parse(time.RFC3339Nano, res.Container.State.StartedAt)
		if err != nil {
			e.t.Fatalf("%s: started at %q: %v", id, res.Container.State.StartedAt, err)
		}
		out = append(out, at.Sub(started))
	}
	return out
}

func (e *env) removeAgents(project string, n int) {
	e.t.Helper()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); e.clawker("rm", "-f", "--project", project, fmt.Sprintf("h%02d", i)) }()
	}
	wg.Wait()
	eventually(e.t, 60*time.Second, project+" agents gone", func() error {
		for _, r := range e.agents() {
			if r.Project == project && r.Registered {
				return fmt.Errorf("%s still registered", r.Agent)
			}
		}
		return nil
	})
}

func findByName(rows []agentRow, project, agent string) (agentRow, bool) {
	for _, r := range rows {
		if r.Project == project && r.Agent == agent {
			return r, true
		}
	}
	return agentRow{}, false
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func sumSeries(m map[string]float64, name string) float64 {
	var sum float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			sum += v
		}
	}
	return sum
}

// buildAttackerBin compiles test/e2e/attacker statically.
func buildAttackerBin(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "attacker")
	cmd := exec.Command("go", "build", "-o", out, "./test/e2e/attacker")
	cmd.Dir = testenv.ModuleRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build attacker: %v\n%s", err, b)
	}
	return out
}

// putFiles writes files (paths relative to /) into a container, 0400.
func putFiles(t *testing.T, id string, files map[string][]byte) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for n, b := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o400, Size: int64(len(b))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := suite.docker.CopyToContainer(context.Background(), id, mobyclient.CopyToContainerOptions{DestinationPath: "/", Content: &buf}); err != nil {
		t.Fatal(err)
	}
}

// attackIn runs the attacker in a container with the material in
// /attack/m and returns its JSON outcome line.
func attackIn(t *testing.T, id string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	argv := append([]string{"/attack/attacker", "-name", "soak", "-dir", "/attack/m"}, args...)
	ex, err := suite.docker.ExecCreate(ctx, id, mobyclient.ExecCreateOptions{Cmd: argv, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return "exec create: " + err.Error()
	}
	att, err := suite.docker.ExecAttach(ctx, ex.ID, mobyclient.ExecAttachOptions{})
	if err != nil {
		return "exec attach: " + err.Error()
	}
	defer att.Close()
	var out, errb bytes.Buffer
	_, _ = stdcopy.StdCopy(&out, &errb, att.Reader)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var o map[string]any
	if json.Unmarshal([]byte(lines[len(lines)-1]), &o) != nil {
		return "unparsable: " + out.String() + errb.String()
	}
	return lines[len(lines)-1]
}
