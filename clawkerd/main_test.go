package clawkerd

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

const helperEnv = "CLAWKERD_TEST_RUN_MAIN"

// TestMain doubles as the clawkerd binary for subprocess tests.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(Main(os.Args[1:], os.Stderr))
	}
	os.Exit(m.Run())
}

type mainProc struct {
	cmd     *exec.Cmd
	addr    string
	logFile string
	stderr  *logger.SyncBuffer
	stdout  *logger.SyncBuffer
	waited  chan struct{}
	code    int
	pki     *testPKI
}

func startMain(t *testing.T, env []string, args ...string) *mainProc {
	t.Helper()
	pki := newTestPKI(t)
	dir := t.TempDir()
	must(t, writeBootstrapFiles(dir, pki))
	logFile := filepath.Join(t.TempDir(), "clawkerd.log")
	full := append([]string{"--listen", "127.0.0.1:0", "--bootstrap-dir", dir,
		"--init-marker", filepath.Join(t.TempDir(), "marker"), "--log-file", logFile}, args...)
	cmd := exec.Command(os.Args[0], full...)
	cmd.Env = append(append(os.Environ(), helperEnv+"=1", consts.EnvAgent+"=dev"), env...)
	p := &mainProc{cmd: cmd, logFile: logFile, stderr: &logger.SyncBuffer{}, stdout: &logger.SyncBuffer{}, waited: make(chan struct{}), pki: pki}
	pr, pw := io.Pipe()
	cmd.Stderr = io.MultiWriter(p.stderr, pw)
	cmd.Stdout = p.stdout
	must(t, cmd.Start())
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev["event"] == "listening" && !sent {
				addrCh <- ev["addr"].(string)
				sent = true
			}
		}
	}()
	go func() {
		err := cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
		}
		_ = pw.Close()
		close(p.waited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.waited
	})
	select {
	case p.addr = <-addrCh:
	case <-p.waited:
		t.Fatalf("clawkerd exited %d before listening: %s", p.code, p.stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("clawkerd did not listen: %s", p.stderr.String())
	}
	return p
}

func writeBootstrapFiles(dir string, pki *testPKI) error {
	keyPEM, err := auth.KeyPEM(pki.agentKey())
	if err != nil {
		return err
	}
	files := map[string][]byte{
		consts.BootstrapCert:   auth.CertPEM(pki.agent.Leaf),
		consts.BootstrapKey:    keyPEM,
		consts.BootstrapCA:     auth.CertPEM(pki.ca.Cert),
		consts.BootstrapAssert: []byte("assertion\n"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o400); err != nil {
			return err
		}
	}
	return nil
}

func (p *mainProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.waited:
		return p.code
	case <-time.After(20 * time.Second):
		t.Fatalf("clawkerd did not exit: %s", p.stderr.String())
		return -1
	}
}

func (p *mainProc) session(t *testing.T) *client {
	ts := &testServer{addr: p.addr, pki: p.pki}
	return openSession(t, ts.dial(t, p.pki.cp))
}

func TestMainConfigErrors(t *testing.T) {
	pki := newTestPKI(t)
	good := t.TempDir()
	must(t, writeBootstrapFiles(good, pki))
	noKey := t.TempDir()
	must(t, writeBootstrapFiles(noKey, pki))
	must(t, os.Remove(filepath.Join(noKey, consts.BootstrapKey)))
	cases := []struct {
		name string
		env  []string
		dir  string
		want string
	}{
		{"no-agent", nil, good, consts.EnvAgent},
		{"bad-agent", []string{consts.EnvAgent + "=Bad Name!"}, good, consts.EnvAgent},
		{"missing-key", []string{consts.EnvAgent + "=dev"}, noKey, "bootstrap"},
		{"unknown-user", []string{consts.EnvAgent + "=dev", consts.EnvUser + "=no-such-user-xyz"}, good, "no-such-user-xyz"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "--listen", "127.0.0.1:0", "--bootstrap-dir", tc.dir, "--log-file", "", "--", "true")
			cmd.Env = append(filterEnv(os.Environ(), consts.EnvAgent, consts.EnvUser), append([]string{helperEnv + "=1"}, tc.env...)...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("want exit 2, got %v: %s", err, out)
			}
			if !strings.Contains(string(out), "configuration error") || !strings.Contains(string(out), tc.want) {
				t.Fatalf("message %q lacks %q", out, tc.want)
			}
		})
	}
}

func filterEnv(env []string, drop ...string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, d := range drop {
			keep = keep && k != d
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

func TestMainExitOnNonZeroAndAuditLog(t *testing.T) {
	p := startMain(t, nil, "--", "sleep", "60")
	c := p.session(t)
	c.send(&clawkerdv1.Command{CommandId: "ready", Payload: &clawkerdv1.Command_AgentReady{AgentReady: &clawkerdv1.AgentReady{}}})
	c.next("ready")
	if res := c.run("ok", &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{stage("true")}, ExitOnNonZero: true}); res.done == nil {
		t.Fatalf("%+v", res)
	}
	res := c.run("fail", &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{stage("sh", "-c", "echo bye; exit 7")}, ExitOnNonZero: true})
	if res.done == nil || res.done.GetFinalExitCode() != 7 || trimLines(res.output) != "bye" {
		t.Fatalf("reply before exit must be complete: %+v", res)
	}
	if code := p.wait(t); code != 7 {
		t.Fatalf("clawkerd exit %d, want 7: %s", code, p.stderr.String())
	}
	log, err := os.ReadFile(p.logFile)
	must(t, err)
	for _, ev := range []string{"session_started", "shell_command_started", "shell_command_done", "session_ended"} {
		if !strings.Contains(string(log), `"event":"`+ev+`"`) {
			t.Fatalf("audit log lacks %s:\n%s", ev, log)
		}
	}
	for _, field := range []string{`"argv":["sh","-c"`, `"peer_cn":"clawker-controlplane"`, `"peer_thumbprint":`, `"command_id":"fail"`, `"outcome":"done"`, `"exit_code":7`, `"duration":`} {
		if !strings.Contains(string(log), field) {
			t.Fatalf("audit log lacks %s:\n%s", field, log)
		}
	}
}

func TestMainSigtermBeforeReadyExitsPromptly(t *testing.T) {
	p := startMain(t, nil, "--", "sleep", "60")
	must(t, p.cmd.Process.Signal(syscall.SIGTERM))
	if code := p.wait(t); code != 143 {
		t.Fatalf("exit %d, want 143", code)
	}
}

func TestMainForwardsSignalsToUserCmd(t *testing.T) {
	p := startMain(t, nil, "--", "sh", "-c", `trap 'echo got-usr1; exit 42' USR1; echo ready; while :; do sleep 0.05; done`)
	c := p.session(t)
	c.send(&clawkerdv1.Command{CommandId: "ready", Payload: &clawkerdv1.Command_AgentReady{AgentReady: &clawkerdv1.AgentReady{}}})
	c.next("ready")
	// Wait until the trap is installed (the CMD printed "ready").
	eventually(t, 10*time.Second, "user CMD ready", func() bool { return strings.Contains(p.stdout.String(), "ready") })
	if !c.hello().GetCmdRunning() {
		t.Fatal("cmd_running false while the user CMD runs")
	}
	ok := false
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !ok; {
		_ = p.cmd.Process.Signal(syscall.SIGWINCH) // forwarded, harmless
		// Under load the wait below can time out after the process
		// already exited from an earlier SIGUSR1: that is success.
		if err := p.cmd.Process.Signal(syscall.SIGUSR1); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Fatal(err)
		}
		select {
		case <-p.waited:
			ok = true
		case <-time.After(200 * time.Millisecond):
		}
	}
	if code := p.wait(t); code != 42 || !strings.Contains(p.stdout.String(), "got-usr1") {
		t.Fatalf("exit %d, want 42 (user CMD's code): %s", code, p.stderr.String())
	}
}

// zombiesOf lists zombie children of pid.
func zombiesOf(pid int) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(pid) {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestMainReapAllReapsOrphansWithoutStealing(t *testing.T) {
	p := startMain(t, nil, "--reap-all")
	c := p.session(t)
	marker := filepath.Join(t.TempDir(), "orphan-done")
	// The subshell outlives its parent and is reparented to clawkerd
	// (subreaper); unreaped it would stay a zombie child of clawkerd.
	res := c.run("orphan", stages(stage("sh", "-c", fmt.Sprintf("(sleep 0.2; touch %s) & exit 0", marker))))
	if res.done == nil {
		t.Fatalf("%+v", res)
	}
	eventually(t, 10*time.Second, "orphan ran", func() bool { _, err := os.Stat(marker); return err == nil })
	eventually(t, 10*time.Second, "no zombie children", func() bool { return len(zombiesOf(p.cmd.Process.Pid)) == 0 })
	// The wait4(-1) reaper still hands every stage its own status.
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("s%d", i)
			r := c.run(id, stages(stage("sh", "-c", fmt.Sprintf("exit %d", i)), stage("sh", "-c", fmt.Sprintf("(sleep 0.1 &); exit %d", 100+i))))
			if r.done == nil || r.stages[0].GetExitCode() != int32(i) || r.done.GetFinalExitCode() != int32(100+i) {
				t.Errorf("%s: stages %v done %v", id, r.stages, r.done)
			}
		}()
	}
	wg.Wait()
	eventually(t, 10*time.Second, "no zombie children", func() bool { return len(zombiesOf(p.cmd.Process.Pid)) == 0 })
}
