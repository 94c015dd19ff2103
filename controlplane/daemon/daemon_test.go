package daemon

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// syncBuf is a goroutine-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testConfig is a Config on loopback ephemeral ports with a fresh home as
// the key directory (what `clawker init` makes).
func testConfig(t *testing.T) Config {
	t.Helper()
	home := auth.Home{Dir: t.TempDir()}
	if _, err := home.Init(time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := defaults()
	cfg.ConfigDir = home.Dir
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.AdminAddr, cfg.AgentAddr, cfg.TokenAddr, cfg.HealthAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.EgressDNSAddr, cfg.EgressProxyAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.ShutdownTimeout = 5 * time.Second
	return cfg
}

var errNoDocker = errors.New("no engine in unit tests")

// start runs a daemon and returns it once /healthz is bound; Run's result
// arrives on the returned channel after cancel.
func start(t *testing.T, cfg Config, log *syncBuf, opts ...Option) (*Daemon, context.CancelFunc, *runResult) {
	t.Helper()
	opts = append([]Option{WithDocker(func() (mobyclient.APIClient, error) { return nil, errNoDocker })}, opts...)
	d := New(cfg, "test", logger.New(log, "debug", "clawker-cp"), opts...)
	ctx, cancel := context.WithCancel(context.Background())
	done := &runResult{done: make(chan struct{})}
	go func() { done.err = d.Run(ctx); close(done.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for d.Addr("health") == "" {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("health listener never bound; log:\n%s", log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() {
		cancel()
		<-done.done
	})
	return d, cancel, done
}

// runResult is Run's outcome, readable any number of times after done.
type runResult struct {
	done chan struct{}
	err  error
}

type healthBody struct {
	Ready      bool              `json:"ready"`
	Subsystems map[string]string `json:"subsystems"`
}

func getHealth(t *testing.T, addr string) (int, healthBody) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var hb healthBody
	if err := json.NewDecoder(resp.Body).Decode(&hb); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, hb
}

// waitFor polls cond until it holds, failing after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: timed out", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunWithoutDockerDegradesButServesAdminAndHealth(t *testing.T) {
	cfg := testConfig(t)
	var log syncBuf
	d, cancel, done := start(t, cfg, &log)
	waitFor(t, "admin listener", func() bool { return d.Addr("admin") != "" })
	waitFor(t, "startup finished", func() bool { return strings.Contains(log.String(), "cp_degraded") })

	code, hb := getHealth(t, d.Addr("health"))
	if code != http.StatusServiceUnavailable || hb.Ready {
		t.Fatalf("healthz without Docker: %d %+v, want 503 not ready", code, hb)
	}
	if !strings.HasPrefix(hb.Subsystems[subDocker], "failed") || hb.Subsystems[subAdmin] != statusOK ||
		hb.Subsystems[subRegistry] != statusOK || hb.Subsystems[subKeys] != statusOK {
		t.Fatalf("subsystems: %v", hb.Subsystems)
	}
	for _, ev := range []string{`"event":"cp_docker_unavailable"`, `"event":"cp_agent_surface_disabled"`, `"event":"cp_degraded"`} {
		if !strings.Contains(log.String(), ev) {
			t.Errorf("log lacks %s", ev)
		}
	}

	// The admin API answers the CLI cert over mTLS.
	h := auth.Home{Dir: cfg.ConfigDir}
	cert, err := tls.LoadX509KeyPair(h.Path(consts.CLICertFile), h.Path(consts.CLIKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := auth.ReadCertPool(h.Path(consts.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(d.Addr("admin"), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: consts.ControlPlaneCN})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cctx := context.WithTimeout(context.Background(), 10*time.Second)
	defer cctx()
	res, err := adminv1.NewAdminServiceClient(conn).Health(ctx, &adminv1.HealthRequest{})
	if err != nil || res.GetReady() || res.GetSubsystems()[subAdmin] != statusOK {
		t.Fatalf("admin Health: %v %v", res, err)
	}
	lres, err := adminv1.NewAdminServiceClient(conn).ListAgents(ctx, &adminv1.ListAgentsRequest{})
	if err != nil || len(lres.GetAgents()) != 0 {
		t.Fatalf("ListAgents on an empty registry: %v %v", lres, err)
	}

	// /metrics is Prometheus text with the CP's families.
	resp, err := http.Get("http://" + d.Addr("health") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"clawker_cp_sessions", "clawker_cp_docker_event_reconnects_total", "go_goroutines"} {
		if !strings.Contains(string(body), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}

	// SIGTERM (ctx cancel) shuts down cleanly and promptly.
	cancel()
	select {
	case <-done.done:
		if done.err != nil {
			t.Fatalf("Run returned %v after cancel", done.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if !strings.Contains(log.String(), `"event":"cp_stopped"`) {
		t.Error("no cp_stopped log line")
	}
	if _, err := http.Get("http://" + d.Addr("health") + "/healthz"); err == nil {
		t.Error("health listener still serving after shutdown")
	}
}

func TestRunBrokenDataDirFallsBackToMemoryRegistry(t *testing.T) {
	cfg := testConfig(t)
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = filepath.Join(blocker, "data") // a path under a regular file
	var log syncBuf
	d, _, _ := start(t, cfg, &log)
	waitFor(t, "startup finished", func() bool { return strings.Contains(log.String(), "cp_degraded") })
	_, hb := getHealth(t, d.Addr("health"))
	if !strings.HasPrefix(hb.Subsystems[subRegistry], "degraded: in-memory") {
		t.Fatalf("registry status %q", hb.Subsystems[subRegistry])
	}
	if !strings.Contains(log.String(), `"event":"cp_registry_degraded"`) {
		t.Error("no cp_registry_degraded log line")
	}
}

func TestRunMissingKeysKeepsHealthUp(t *testing.T) {
	cfg := testConfig(t)
	cfg.ConfigDir = t.TempDir() // empty: no keys
	var log syncBuf
	d, _, _ := start(t, cfg, &log)
	waitFor(t, "startup finished", func() bool { return strings.Contains(log.String(), "cp_degraded") })
	code, hb := getHealth(t, d.Addr("health"))
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(hb.Subsystems[subKeys], "failed") ||
		!strings.HasPrefix(hb.Subsystems[subAdmin], "disabled") {
		t.Fatalf("healthz without keys: %d %v", code, hb.Subsystems)
	}
	if d.Addr("admin") != "" {
		t.Error("admin listener opened without key material")
	}
	if !strings.Contains(log.String(), `"event":"cp_keys_unavailable"`) {
		t.Error("no cp_keys_unavailable log line")
	}
}

func TestRunFailsOnlyWhenHealthCannotBind(t *testing.T) {
	cfg := testConfig(t)
	cfg.HealthAddr = "256.0.0.1:1"
	d := New(cfg, "test", logger.Nop(), WithDocker(func() (mobyclient.APIClient, error) { return nil, errNoDocker }))
	if err := d.Run(context.Background()); err == nil {
		t.Fatal("Run succeeded with an unbindable health address")
	}
}

func TestHealthReadiness(t *testing.T) {
	h := newHealth("v", "a", "b")
	if ready, _ := h.report(); ready {
		t.Fatal("ready before start")
	}
	h.set("a", statusOK)
	h.set("b", statusOK)
	if ready, _ := h.report(); ready {
		t.Fatal("ready before markStarted")
	}
	h.markStarted()
	if ready, _ := h.report(); !ready {
		t.Fatal("not ready with every subsystem ok")
	}
	connected := false
	h.probe("events", func() string {
		if connected {
			return statusOK
		}
		return "disconnected"
	})
	if ready, subs := h.report(); ready || subs["events"] != "disconnected" {
		t.Fatalf("probe not consulted: %v %v", ready, subs)
	}
	connected = true
	if ready, _ := h.report(); !ready {
		t.Fatal("not ready after probe recovered")
	}
	h.probe("panicky", func() string { panic("boom") })
	if ready, subs := h.report(); ready || subs["panicky"] != "probe panicked" {
		t.Fatalf("panicking probe: %v %v", ready, subs)
	}
}

func TestLoadConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "cp.json")
	if err := os.WriteFile(file, []byte(`{"data_dir":"/from/file","admin_addr":"127.0.0.1:1","log_level":"warn"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"CLAWKER_CP_CONFIG": file, "CLAWKER_CP_ADMIN_ADDR": "127.0.0.1:2", "CLAWKER_CP_CONFIG_DIR": "/keys",
		"CLAWKER_CP_EGRESS_UPSTREAM_CA": "-----BEGIN CERTIFICATE-----\nx\n"}
	cfg, err := LoadConfig([]string{"--log-level=debug"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/from/file" || cfg.AdminAddr != "127.0.0.1:2" || cfg.LogLevel != "debug" || cfg.ConfigDir != "/keys" ||
		cfg.AgentAddr != fmt.Sprintf(":%d", consts.PortAgent) || cfg.EgressUpstreamCA != env["CLAWKER_CP_EGRESS_UPSTREAM_CA"] {
		t.Fatalf("precedence flags > env > file > defaults broken: %+v", cfg)
	}
	for name, args := range map[string][]string{
		"bad address":   {"--admin-addr=nocolon"},
		"stray args":    {"extra"},
		"unknown flag":  {"--nope"},
		"bad file json": {"--config=" + filepath.Join(dir, "missing.json")},
	} {
		if _, err := LoadConfig(args, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
