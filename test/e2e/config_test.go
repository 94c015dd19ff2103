package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"
)

// nobody is the busybox image's unprivileged user (home /).
const nobody = "65534"

func writeYAML(t *testing.T, yaml string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "clawker.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func inspectCtr(t *testing.T, id string) mobyclient.ContainerInspectResult {
	t.Helper()
	res, err := suite.docker.ContainerInspect(context.Background(), id, mobyclient.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// execAs runs argv in the container as user (docker exec, bypassing the
// CP: the test checks file permissions, not clawker's exec path).
func execAs(t *testing.T, id, user string, argv ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ex, err := suite.docker.ExecCreate(ctx, id, mobyclient.ExecCreateOptions{User: user, Cmd: argv, AttachStdout: true, AttachStderr: true})
	if err != nil {
		t.Fatalf("exec create: %v", err)
	}
	att, err := suite.docker.ExecAttach(ctx, ex.ID, mobyclient.ExecAttachOptions{})
	if err != nil {
		t.Fatalf("exec attach: %v", err)
	}
	defer att.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := att.Reader.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	insp, err := suite.docker.ExecInspect(ctx, ex.ID, mobyclient.ExecInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return b.String(), insp.ExitCode
}

func waitInit(t *testing.T, e *env, id string) {
	t.Helper()
	eventually(t, 90*time.Second, "init completed", func() error {
		if r, ok := findAgent(e.agents(), id); !ok || r.Init != "completed" {
			return fmt.Errorf("agent %+v", r)
		}
		return nil
	})
}

type limitsRow struct {
	ContainerID string `json:"container_id"`
	Limits      *struct {
		CPUs        float64 `json:"cpus"`
		MemoryBytes int64   `json:"memory_bytes"`
		PidsLimit   int64   `json:"pids_limit"`
	} `json:"limits"`
}

// TestResourceLimitsContainAgent: limits from flags and clawker.yaml are
// in docker inspect and `agents -o json`; a fork bomb hits its pids limit
// inside its agent while a neighbour keeps working; a memory hog is
// OOM-killed and shows as agent_oom_killed in `clawker events`.
func TestResourceLimitsContainAgent(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	dir := writeYAML(t, "resources:\n  cpus: 0.5\n  memory: 96m\n  pids_limit: 40\n")

	// The fork bomb: far more sleepers than the limit allows.
	bomb := strings.TrimSpace(e.must("run", "-d", "--project", "lim", "--agent", "bomb", "--project-dir", dir,
		agentImage, "sh", "-c", "i=0; while [ $i -lt 200 ]; do sleep 600 & i=$((i+1)); done; echo spawned; exec sleep 3600").stdout)
	hc := inspectCtr(t, bomb).Container.HostConfig
	if hc.PidsLimit == nil || *hc.PidsLimit != 40 || hc.Memory != 96<<20 || hc.NanoCPUs != 500_000_000 {
		t.Fatalf("inspect: pids %v memory %d cpus %d", hc.PidsLimit, hc.Memory, hc.NanoCPUs)
	}
	eventually(t, 90*time.Second, "fork fails inside the bomb agent", func() error {
		if logs := containerLogs(t, bomb); !strings.Contains(logs, "fork") && !strings.Contains(logs, "Resource temporarily unavailable") {
			return fmt.Errorf("logs: %q", logs)
		}
		return nil
	})
	top, err := suite.docker.ContainerTop(context.Background(), bomb, mobyclient.ContainerTopOptions{})
	if err != nil && strings.Contains(err.Error(), "is not running") {
		// The bomb's shell can die of its own failed forks, and the agent
		// with it: the limit held either way (fork failed above).
		t.Logf("bomb agent already ended: %v", err)
	} else if err != nil {
		t.Fatal(err)
	}
	if n := len(top.Processes); err == nil && n > 40 {
		t.Fatalf("%d processes in the bomb agent, limit 40", n)
	}

	// A neighbour with the defaults: 4096 pids, no memory cap; it works
	// through the CP while the bomb is at its limit.
	calm := strings.TrimSpace(e.must("run", "-d", "--project", "lim", "--agent", "calm", agentImage, "sleep", "3600").stdout)
	if p := inspectCtr(t, calm).Container.HostConfig.PidsLimit; p == nil || *p != 4096 {
		t.Fatalf("default pids limit %v", p)
	}
	waitInit(t, e, calm)
	if r := e.must("exec", "--project", "lim", "calm", "--", "sh", "-c", "echo alive-$((6*7))"); !strings.Contains(r.stdout, "alive-42") {
		t.Fatalf("neighbour exec: %s", r)
	}

	// Limits in agents -o json, read from HostConfig.
	r := e.must("agents", "-a", "--project", "lim", "-o", "json")
	var rows []limitsRow
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, row := range rows {
		switch row.ContainerID {
		case bomb:
			seen++
			if row.Limits == nil || row.Limits.PidsLimit != 40 || row.Limits.MemoryBytes != 96<<20 || row.Limits.CPUs != 0.5 {
				t.Errorf("bomb limits %+v", row.Limits)
			}
		case calm:
			seen++
			if row.Limits == nil || row.Limits.PidsLimit != 4096 || row.Limits.MemoryBytes != 0 {
				t.Errorf("calm limits %+v", row.Limits)
			}
		}
	}
	if seen != 2 {
		t.Fatalf("agents -o json: %s", r.stdout)
	}

	// The memory hog: dd's 512 MiB buffer under a 64 MiB limit (flag
	// over the file's 96m). The shell survives and reports dd's end.
	hog := strings.TrimSpace(e.must("run", "-d", "--project", "lim", "--agent", "hog", "--project-dir", dir, "--memory", "64m",
		agentImage, "sh", "-c", "dd if=/dev/zero of=/dev/null bs=512M count=1; echo dd-exit-$?; exec sleep 3600").stdout)
	if m := inspectCtr(t, hog).Container.HostConfig.Memory; m != 64<<20 {
		t.Fatalf("flag did not override the file: memory %d", m)
	}
	eventually(t, 90*time.Second, "agent_oom_killed for the hog", func() error {
		for _, ev := range forContainer(e.replay(), hog) {
			if ev.Name == "agent_oom_killed" && ev.Fields["Reason"] == "oom" && ev.Agent == "hog" {
				return nil
			}
		}
		return fmt.Errorf("no agent_oom_killed yet; logs %q", containerLogs(t, hog))
	})
	if logs := containerLogs(t, hog); !strings.Contains(logs, "dd-exit-137") {
		t.Errorf("dd was not SIGKILLed: %q", logs)
	}
	if calmState := inspectCtr(t, calm).Container.State; calmState == nil || !calmState.Running || calmState.OOMKilled {
		t.Errorf("neighbour affected: %+v", calmState)
	}
}

// TestSecretsDelivered: a secret from a host variable and one from a host
// file appear under /run/secrets (tmpfs), readable by the agent's user
// only, and never in the container's Env.
func TestSecretsDelivered(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	const tokVal, fileVal = "tok-7f3a9c1e-from-env", "npm-2b8d4e6f-from-file"
	t.Setenv("CLAWKER_E2E_SECRET_TOKEN", tokVal)
	dir := writeYAML(t, "user: \""+nobody+"\"\nsecrets:\n  token: {env: CLAWKER_E2E_SECRET_TOKEN}\n  npmrc: {file: npmrc.txt}\nenv: {PLAIN: visible}\n")
	if err := os.WriteFile(filepath.Join(dir, "npmrc.txt"), []byte(fileVal), 0o600); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(e.must("run", "-d", "--project", "sec", "--agent", "holder", "--project-dir", dir, agentImage, "sleep", "3600").stdout)
	waitInit(t, e, id)

	for name, want := range map[string]string{"token": tokVal, "npmrc": fileVal} {
		out, code := execAs(t, id, nobody, "cat", "/run/secrets/"+name)
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("agent user reading %s: %d %q", name, code, out)
		}
		out, code = execAs(t, id, "1234:1234", "cat", "/run/secrets/"+name)
		if code == 0 || strings.Contains(out, want) {
			t.Errorf("uid 1234 read %s: %d %q", name, code, out)
		}
	}
	out, _ := execAs(t, id, nobody, "sh", "-c", "stat -c '%a %u' /run/secrets /run/secrets/token; grep ' /run/secrets ' /proc/mounts")
	if !strings.Contains(out, "500 65534") || !strings.Contains(out, "400 65534") || !strings.Contains(out, "tmpfs") {
		t.Errorf("modes / mount: %q", out)
	}
	env := strings.Join(inspectCtr(t, id).Container.Config.Env, "\n")
	if strings.Contains(env, tokVal) || strings.Contains(env, fileVal) || !strings.Contains(env, "PLAIN=visible") {
		t.Errorf("inspect Env: %s", env)
	}
	// The agent user cannot read the staged copies either.
	if out, code := execAs(t, id, nobody, "cat", "/run/clawker/staging/secrets/token"); code == 0 {
		t.Errorf("agent user read the staged copy: %q", out)
	}
}

// TestStateSurvivesRm: a state path written in one agent is there after
// rm and run again; rm --state drops it.
func TestStateSurvivesRm(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	dir := writeYAML(t, "user: \""+nobody+"\"\nstate: [\"~/.claude\"]\n")
	run := func() string {
		return strings.TrimSpace(e.must("run", "-d", "--project", "st", "--agent", "keeper", "--project-dir", dir,
			"--state", "/data", agentImage, "sleep", "3600").stdout)
	}
	id := run()
	// The agent's user owns the state dirs and writes them.
	if out, code := execAs(t, id, nobody, "sh", "-c", "echo remembered > /.claude/login && echo cached > /data/c && cat /.claude/login"); code != 0 {
		t.Fatalf("write state as the agent user: %d %q", code, out)
	}
	e.must("rm", "--force", "--project", "st", "keeper")
	r := e.must("state", "ls", "--project", "st", "-o", "json")
	var vols []struct{ Volume, Agent, Path string }
	if err := json.Unmarshal([]byte(r.stdout), &vols); err != nil || len(vols) != 2 {
		t.Fatalf("state ls after rm: %v %s", err, r.stdout)
	}

	id = run()
	out, code := execAs(t, id, nobody, "sh", "-c", "cat /.claude/login /data/c")
	if code != 0 || !strings.Contains(out, "remembered") || !strings.Contains(out, "cached") {
		t.Fatalf("state after rm + run: %d %q", code, out)
	}
	e.must("rm", "--force", "--state", "--project", "st", "keeper")
	r = e.must("state", "ls", "--project", "st", "-o", "json")
	if strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("state after rm --state: %s", r.stdout)
	}
	id = run()
	if out, code := execAs(t, id, nobody, "cat", "/.claude/login"); code == 0 {
		t.Fatalf("state survived rm --state: %q", out)
	}
}
