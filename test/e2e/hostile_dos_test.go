package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
)

// dosAttacks are the resource-exhaustion rows of the hostile-peer matrix
// (issue 13 §3): each would wear the CP down if its bound were missing.
// alice's used assertion was redeemed by the test before.
func dosAttacks(t *testing.T, e *env, stranger, alice string, aliceM material, aliceUsed string) []hostileAttack {
	t.Helper()
	cp := consts.ControlPlaneContainer
	agentAddr := fmt.Sprintf("%s:%d", cp, consts.PortAgent)
	tokenAddr := fmt.Sprintf("%s:%d", cp, consts.PortToken)
	tokenURL := fmt.Sprintf("https://%s%s", tokenAddr, consts.TokenPath)
	metricsURL := fmt.Sprintf("http://%s:%d/metrics", cp, consts.PortHealth)
	const agentCap = 16 // controlplane/daemon maxConnsPerPeer["agent"]

	// The spent assertion is gone from the agent's disk.
	if pathExists(t, alice, "/run/clawker/bootstrap/"+consts.BootstrapAssert) {
		t.Errorf("alice's spent assertion is still on disk")
	}
	// The CP container's Docker log is rotated.
	insp, err := suite.docker.ContainerInspect(context.Background(), cp, mobyclient.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lc := insp.Container.HostConfig.LogConfig; lc.Type != "json-file" || lc.Config["max-size"] == "" || lc.Config["max-file"] == "" {
		t.Errorf("CP log config %+v, want json-file with max-size and max-file", lc)
	}

	refusedConn := func(o outcome) error {
		if o.OK || o.Stage != "conn" {
			return fmt.Errorf("want the server to bound the conns, got %s %s", o.Stage, o.Detail)
		}
		return nil
	}
	refusedTransport := func(o outcome) error {
		if o.OK || o.Stage != "transport" || strings.Contains(o.Detail, "no such host") || strings.Contains(o.Detail, "connection refused") {
			return fmt.Errorf("want a hang-up after connect, got %s %s %s", o.Stage, o.Detail, o)
		}
		return nil
	}
	return []hostileAttack{
		{name: "dos-conn-flood-beyond-per-peer-cap", surface: "agent-api", from: "stranger", event: "conn_refused",
			run: func(name string) outcome {
				return runAttacker(t, stranger, name, material{}, "-mode", "flood", "-target", agentAddr, "-n", "200", "-cap", strconv.Itoa(agentCap), "-hold", "2s")
			}, want: refusedConn},
		{name: "dos-idle-conns-closed", surface: "agent-api", from: "stranger", layer: "(handshake timeouts)",
			run: func(name string) outcome {
				return runAttacker(t, stranger, name, material{}, "-mode", "idle", "-target", agentAddr+","+tokenAddr, "-hold", "15s")
			}, want: refusedConn},
		{name: "dos-metrics-from-stranger", surface: "health", from: "stranger", event: "conn_refused",
			run: func(name string) outcome {
				return runAttacker(t, stranger, name, material{}, "-mode", "get", "-target", metricsURL)
			}, want: refusedTransport},
		{name: "dos-metrics-from-agent", surface: "health", from: "alice", event: "conn_refused",
			run: func(name string) outcome {
				return runAttacker(t, alice, name, material{}, "-mode", "get", "-target", metricsURL)
			}, want: refusedTransport},
		{name: "dos-replayed-assertion-no-docker-call", surface: "token", from: "alice", event: "token_refusal_rate_limited",
			run: func(name string) outcome {
				// A replay that reached the peer lookup would cost an inspect
				// (confirming the indexed container); the periodic reconcile
				// only lists, so inspects are the replays' own signal.
				const inspects = `clawker_cp_peer_lookup_docker_calls_total{call="inspect"}`
				before := cpMetric(t, e, inspects)
				o := runAttacker(t, alice, name, aliceM.with("", aliceUsed), "-mode", "replay", "-target", tokenURL, "-n", "40")
				after := cpMetric(t, e, inspects)
				if after != before {
					o.OK = true // a replay that costs Docker calls is a leak of CP capacity
				}
				o.Detail += fmt.Sprintf("; docker calls during the replays: %v", after-before)
				return o
			}, want: func(o outcome) error {
				if o.OK || o.HTTPStatus != 401 || o.Body != genericOAuth {
					return fmt.Errorf("want only generic 401s and no Docker call: %s (%s)", o.Detail, o.Body)
				}
				return nil
			}},
	}
}

// cpMetric scrapes the CP's /metrics through the loopback-published port
// (the operator's path) and sums every series of name.
func cpMetric(t *testing.T, e *env, name string) float64 {
	t.Helper()
	var st struct {
		HealthAddr string `json:"health_addr"`
	}
	if err := json.Unmarshal([]byte(e.must("cp", "status", "-o", "json").stdout), &st); err != nil || st.HealthAddr == "" {
		t.Fatalf("cp status: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+st.HealthAddr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape /metrics from the host: %v", err)
	}
	defer resp.Body.Close()
	return sumMetric(t, resp.Body, name)
}

func sumMetric(t *testing.T, r io.Reader, name string) float64 {
	t.Helper()
	var sum float64
	found := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
		found = true
	}
	if !found {
		t.Fatalf("/metrics has no %s", name)
	}
	return sum
}
