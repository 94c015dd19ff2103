package cli

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// TestBadInputs is the bad-input table: each case exits non-zero with a
// message that says what is wrong, and none reaches Docker.
func TestBadInputs(t *testing.T) {
	t.Setenv(EnvCPAdminAddr, "")
	home := initHome(t)
	for _, tc := range []struct {
		name string
		home string // "" = initialised home
		args []string
		code int
		msg  string
	}{
		{"bad agent name", "", []string{"run", "--agent", "Bad Name!", "busybox"}, ExitUsage, "invalid --agent"},
		{"bad project name", "", []string{"run", "--project", "../x", "--agent", "a", "busybox"}, ExitUsage, "invalid --project"},
		{"agent missing", "", []string{"run", "busybox"}, ExitUsage, "agent"},
		{"image missing", "", []string{"run", "--agent", "a"}, ExitUsage, "no image"},
		{"env without key", "", []string{"run", "--agent", "a", "-e", "=v", "busybox"}, ExitUsage, "KEY=VALUE"},
		{"reserved env", "", []string{"run", "--agent", "a", "-e", "CLAWKER_AGENT=x", "busybox"}, ExitUsage, "set by clawker"},
		{"volume over clawkerd", "", []string{"run", "--agent", "a", "-v", "x:/run/clawker/bin", "busybox"}, ExitUsage, "which clawker owns"},
		{"volume over /run", "", []string{"run", "--agent", "a", "-v", "/tmp:/run:ro", "busybox"}, ExitUsage, "/run/clawker"},
		{"volume over init marker", "", []string{"run", "--agent", "a", "-v", "x:/var/lib/clawker/", "busybox"}, ExitUsage, "/var/lib/clawker"},
		{"run before init", t.TempDir(), []string{"run", "--agent", "a", "busybox"}, ExitUsage, "clawker init"},
		{"cp up before init", t.TempDir(), []string{"cp", "up"}, ExitUsage, "clawker init"},
		{"agents before init", t.TempDir(), []string{"agents"}, ExitUsage, "clawker init"},
		{"bad output", "", []string{"agents", "-o", "yaml"}, ExitUsage, "table or json"},
		{"exec without --", "", []string{"exec", "dev", "ls"}, ExitUsage, "--"},
		{"exec bad name", "", []string{"exec", "Bad!", "--", "ls"}, ExitUsage, "invalid --agent"},
		{"contain bad action", "", []string{"contain", "dev", "--action", "explode"}, ExitUsage, "network-detach, pause, kill, egress-block or egress-unblock"},
		{"contain no action", "", []string{"contain", "dev"}, ExitUsage, "action"},
		{"rm bad name", "", []string{"rm", "Bad!"}, ExitUsage, "invalid --agent"},
		{"unknown command", "", []string{"frobnicate"}, ExitUsage, "unknown command"},
		{"unknown flag", "", []string{"agents", "--nope"}, ExitUsage, "unknown flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &harness{home: home}
			if tc.home != "" {
				h.home = tc.home
			}
			_, stderr, code := h.run(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, stderr)
			}
			if !strings.Contains(stderr, tc.msg) {
				t.Errorf("stderr %q lacks %q", stderr, tc.msg)
			}
			if h.dockerCalls != 0 {
				t.Errorf("bad input reached Docker (%d calls)", h.dockerCalls)
			}
		})
	}
}

func TestDockerDownIsUnavailable(t *testing.T) {
	h := &harness{home: initHome(t)}
	_, stderr, code := h.run(t, "cp", "status")
	if code != ExitUnavailable || !strings.Contains(stderr, "Docker engine") {
		t.Fatalf("exit %d stderr %q", code, stderr)
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestCPDownIsUnavailable(t *testing.T) {
	t.Setenv(EnvCPAdminAddr, closedAddr(t))
	h := &harness{home: initHome(t)}
	_, stderr, code := h.run(t, "agents")
	if code != ExitUnavailable || !strings.Contains(stderr, "cp status") {
		t.Fatalf("exit %d stderr %q", code, stderr)
	}
}

func TestAgentsTableAndJSON(t *testing.T) {
	home := initHome(t)
	an, _ := auth.NewAgentName("dev")
	ps, _ := auth.NewProjectSlug("web")
	id := strings.Repeat("ab", 32)
	t.Setenv(EnvCPAdminAddr, serveAdmin(t, home, []agent.Entry{{AgentName: an, Project: ps, ContainerID: id,
		Thumbprint: [32]byte{1}, RegisteredAt: time.Now(), LastSeen: time.Now()}}))
	h := &harness{home: home}
	out, stderr, code := h.run(t, "agents")
	if code != 0 {
		t.Fatalf("agents: %d %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "AGENT") || !strings.Contains(lines[1], "dev") ||
		!strings.Contains(lines[1], "web") || !strings.Contains(lines[1], id[:12]) || !strings.Contains(lines[1], "yes") {
		t.Fatalf("table:\n%s", out)
	}
	// Docker (asked for the container states) is unreachable: the CP's
	// list is printed unfiltered, with state unknown.
	if !strings.HasSuffix(strings.TrimSpace(lines[1]), " -") || !strings.HasSuffix(lines[0], "STATE") {
		t.Errorf("agents without Docker: want state -, got:\n%s", out)
	}
	// -o json asks Docker for the limits; unreachable, they are left out
	// and the registry view still prints.
	out, _, code = h.run(t, "agents", "-o", "json")
	if code != 0 || !strings.Contains(out, `"container_id": "`+id+`"`) || !strings.Contains(out, `"registered": true`) ||
		strings.Contains(out, `"limits"`) {
		t.Fatalf("json:\n%s", out)
	}
	// Unknown agent through the admin API: NotFound → exit 4.
	_, stderr, code = h.run(t, "contain", "ghost", "--action", "kill")
	if code != ExitNotFound || !strings.Contains(stderr, "no agent ghost") {
		t.Fatalf("contain ghost: %d %s", code, stderr)
	}
}

func TestWrongCAIsAClearTLSError(t *testing.T) {
	cpHome := initHome(t)
	t.Setenv(EnvCPAdminAddr, serveAdmin(t, cpHome, nil))
	h := &harness{home: initHome(t)} // a different CA
	_, stderr, code := h.run(t, "agents")
	if code != ExitError || !strings.Contains(stderr, "TLS with the control plane failed") {
		t.Fatalf("exit %d stderr %q", code, stderr)
	}
}

func TestReservedMount(t *testing.T) {
	for target, want := range map[string]string{
		"/run/clawker":           "/run/clawker",
		"/run/clawker/bin":       "/run/clawker",
		"/run/clawker/bin/../x/": "/run/clawker",
		"/run":                   "/run/clawker",
		"/var":                   "/var/lib/clawker",
		"/var/lib/clawker/x":     "/var/lib/clawker",
		"/run/clawkerd":          "",
		"/work":                  "",
		"/var/lib/docker":        "",
	} {
		if got := reservedMount(target); got != want {
			t.Errorf("reservedMount(%q) = %q, want %q", target, got, want)
		}
	}
}

func TestInitIsIdempotent(t *testing.T) {
	h := &harness{home: filepath.Join(t.TempDir(), "home")}
	out, _, code := h.run(t, "init")
	if code != 0 || !strings.Contains(out, "created ca.pem") {
		t.Fatalf("first init: %d %s", code, out)
	}
	ca1, _ := os.ReadFile(filepath.Join(h.home, consts.CACertFile))
	out, _, code = h.run(t, "init")
	ca2, _ := os.ReadFile(filepath.Join(h.home, consts.CACertFile))
	if code != 0 || !strings.Contains(out, "already initialised") || !bytes.Equal(ca1, ca2) {
		t.Fatalf("second init changed the CA or failed: %d %s", code, out)
	}
	st, err := os.Stat(filepath.Join(h.home, consts.CAKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode %v %v", st.Mode(), err)
	}
}

func TestTarBuilderModes(t *testing.T) {
	tb := newTarBuilder(time.Unix(0, 0))
	if err := tb.dir("run/clawker/bootstrap", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := tb.file("run/clawker/bootstrap/key.pem", 0o400, []byte("k")); err != nil {
		t.Fatal(err)
	}
	data, err := tb.bytes()
	if err != nil {
		t.Fatal(err)
	}
	modes := map[string]int64{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		modes[h.Name] = h.Mode
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d", h.Name, h.Uid, h.Gid)
		}
	}
	want := map[string]int64{"run/": 0o755, "run/clawker/": 0o755, "run/clawker/bootstrap/": 0o700, "run/clawker/bootstrap/key.pem": 0o400}
	for k, v := range want {
		if modes[k] != v {
			t.Errorf("%s mode %o, want %o (all: %v)", k, modes[k], v, modes)
		}
	}
}

func TestAgentRef(t *testing.T) {
	id := strings.Repeat("0f", 32)
	if r, err := agentRef("", id[:12]); err != nil || r.GetContainerId() != id[:12] {
		t.Fatalf("id prefix: %v %v", r, err)
	}
	if r, err := agentRef("web", "dev"); err != nil || r.GetAgent() != "dev" || r.GetProject() != "web" {
		t.Fatalf("name: %v %v", r, err)
	}
	if _, err := agentRef("", "Nope!"); exitCode(err) != ExitUsage {
		t.Fatalf("bad name: %v", err)
	}
}

func TestCheckStaticRejectsDynamicBinaries(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The race-enabled test binary is dynamically linked (cgo); a file
	// that is not ELF is refused too.
	junk := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(junk, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := checkStatic(junk); err == nil {
		t.Error("non-ELF accepted")
	}
	f, err := elf.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	dynamic := false
	for _, p := range f.Progs {
		dynamic = dynamic || p.Type == elf.PT_INTERP
	}
	f.Close()
	if err := checkStatic(self); dynamic != (err != nil) {
		t.Errorf("test binary dynamic=%v but checkStatic returned %v", dynamic, err)
	}
}

func TestConsoleFilterDropsClawkerdLogLines(t *testing.T) {
	var out bytes.Buffer
	f := &consoleFilter{w: &out}
	in := "user line 1\n" +
		`{"level":"info","component":"clawkerd","event":"listening"}` + "\n" +
		`{"level":"info","component":"myapp"}` + "\n" + "partial"
	// Feed in awkward chunks to exercise line reassembly.
	for i := 0; i < len(in); i += 7 {
		end := min(i+7, len(in))
		if _, err := f.Write([]byte(in[i:end])); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "user line 1\n" + `{"level":"info","component":"myapp"}` + "\n" + "partial"
	if out.String() != want {
		t.Fatalf("got %q want %q", out.String(), want)
	}
}
