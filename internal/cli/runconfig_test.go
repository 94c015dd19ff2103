package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/mount"

	"github.com/clawker/clawker/internal/config"
)

func writeProject(t *testing.T, yaml string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, config.FileName), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestRunConfigRefusals: a bad clawker.yaml or flag stops run before
// Docker, with the file line where there is one.
func TestRunConfigRefusals(t *testing.T) {
	t.Setenv(EnvCPAdminAddr, "")
	home := initHome(t)
	t.Setenv("CLAWKER_TEST_UNSET_SECRET", "")
	os.Unsetenv("CLAWKER_TEST_UNSET_SECRET")
	for _, tc := range []struct {
		name, yaml string
		args       []string
		msg        string
	}{
		{"unknown key", "image: busybox\nnmae: x\n", nil, "clawker.yaml: yaml: unmarshal errors:\n  line 2: field nmae not found"},
		{"tab indentation", "hooks:\n\tpre-run: x\n", nil, "line 2"},
		{"bad --memory", "", []string{"--memory", "lots", "busybox"}, "memory \"lots\""},
		{"bad --pids-limit", "", []string{"--pids-limit", "-7", "busybox"}, "pids_limit -7"},
		{"bad --state", "", []string{"--state", "rel/path", "busybox"}, "state path"},
		{"state over clawker", "", []string{"--state", "/run/clawker/x", "busybox"}, "which clawker owns"},
		{"file volume over clawkerd", "volumes: [\"x:/run/clawker/bin\"]\n", []string{"busybox"}, "clawker.yaml:1"},
		{"secret from unset env", "secrets: {t: {env: CLAWKER_TEST_UNSET_SECRET}}\n", []string{"busybox"}, "CLAWKER_TEST_UNSET_SECRET is not set"},
		{"missing env file", "env_file: [nope.env]\n", []string{"busybox"}, "nope.env"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeProject(t, tc.yaml)
			h := &harness{home: home}
			args := append([]string{"run", "--agent", "a", "--project-dir", dir}, tc.args...)
			_, stderr, code := h.run(t, args...)
			if code == 0 {
				t.Fatalf("run accepted it; stderr %s", stderr)
			}
			if tc.msg != "" && (code != ExitUsage || !strings.Contains(stderr, tc.msg)) {
				t.Fatalf("exit %d stderr %q, want %d with %q", code, stderr, ExitUsage, tc.msg)
			}
			if tc.msg != "" && h.dockerCalls != 0 {
				t.Fatalf("reached Docker")
			}
		})
	}
}

func TestConfigShowAndValidate(t *testing.T) {
	dir := writeProject(t, "image: node:22\nresources:\n  memory: 2g\n  pids_limit: 512\nenv: {A: file}\nsecrets: {tok: {env: SOME_TOKEN}}\n")
	h := &harness{home: initHome(t)}
	out, stderr, code := h.run(t, "config", "show", "--project-dir", dir, "--memory", "1g", "-e", "A=flag")
	if code != 0 {
		t.Fatalf("show: %d %s", code, stderr)
	}
	for _, want := range []string{
		"resources.memory      1g         flag --memory",
		"resources.pids_limit  512        " + filepath.Join(dir, "clawker.yaml") + ":4",
		"resources.cpus        unlimited  default",
		"image                 node:22    " + filepath.Join(dir, "clawker.yaml") + ":1",
		`env.A                 "flag"     flag --env`,
		"secrets.tok           env SOME_TOKEN",
	} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, `"file"`) {
		t.Errorf("show lists the overridden env value:\n%s", out)
	}
	if h.dockerCalls != 0 {
		t.Fatal("config show reached Docker")
	}
	out, _, code = h.run(t, "config", "validate", filepath.Join(dir, "clawker.yaml"))
	if code != 0 || !strings.Contains(out, ": ok") {
		t.Fatalf("validate good file: %d %s", code, out)
	}
	bad := writeProject(t, "image: x\nresources:\n  memroy: 1g\n")
	_, stderr, code = h.run(t, "config", "validate", filepath.Join(bad, "clawker.yaml"))
	if code != ExitUsage || !strings.Contains(stderr, "line 3: field memroy not found") {
		t.Fatalf("validate bad file: %d %s", code, stderr)
	}
}

func TestAgentResources(t *testing.T) {
	cpus, mem := 1.5, "512m"
	e, err := config.Merge(nil, config.Flags{CPUs: &cpus, Memory: &mem})
	if err != nil {
		t.Fatal(err)
	}
	r, err := agentResources(e)
	if err != nil {
		t.Fatal(err)
	}
	if r.NanoCPUs != 1_500_000_000 || r.Memory != 512<<20 || r.MemorySwap != 512<<20 || r.PidsLimit == nil || *r.PidsLimit != config.DefaultPidsLimit {
		t.Fatalf("resources %+v", r)
	}
	d, _ := config.Merge(nil, config.Flags{})
	r, _ = agentResources(d)
	if r.Memory != 0 || r.NanoCPUs != 0 || *r.PidsLimit != 4096 {
		t.Fatalf("default resources %+v", r)
	}
	if secretsTmpfs(d) != nil {
		t.Fatal("tmpfs without secrets")
	}
}

func TestStateMounts(t *testing.T) {
	u := agentUser{uid: 1000, gid: 1000, home: "/home/node"}
	m, err := stateMounts("web", "dev", []string{"~/.claude", "/opt/cache", "~/.claude"}, u)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m[0].Target != "/home/node/.claude" || m[0].Source != "clawker-state.web.dev.home_.claude" ||
		m[0].Type != mount.TypeVolume || m[0].VolumeOptions.Labels[labelStatePath] != "~/.claude" ||
		m[0].VolumeOptions.Labels["dev.clawker.purpose"] != "state" || m[1].Source != "clawker-state.web.dev.opt_cache" {
		t.Fatalf("mounts %+v", m)
	}
	if _, err := stateMounts("", "dev", []string{"/run/clawker/x"}, u); err == nil {
		t.Fatal("state over /run/clawker accepted")
	}
	if n := stateVolumeName("", "dev", "~/.config"); n != "clawker-state._.dev.home_.config" {
		t.Fatalf("global name %s", n)
	}
}

func TestLookupPasswd(t *testing.T) {
	pw := []byte("root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/bash\n")
	for _, tc := range []struct {
		name, grp string
		want      agentUser
	}{
		{"node", "", agentUser{1000, 1000, "/home/node"}},
		{"1000", "", agentUser{1000, 1000, "/home/node"}},
		{"1000", "50", agentUser{1000, 50, "/home/node"}},
		{"4242", "", agentUser{4242, 4242, "/"}},
	} {
		got, err := lookupPasswd(pw, tc.name, tc.grp)
		if err != nil || got != tc.want {
			t.Errorf("%s:%s = %+v %v, want %+v", tc.name, tc.grp, got, err, tc.want)
		}
	}
	if _, err := lookupPasswd(pw, "ghost", ""); err == nil {
		t.Error("unknown name resolved")
	}
}

func TestCredentialKinds(t *testing.T) {
	for c, want := range map[config.Credentials]string{{}: "", {Git: true}: "git", {SSHAgent: true, Git: true}: "ssh_agent,git"} {
		if got := credentialKinds(c); got != want {
			t.Errorf("credentialKinds(%+v) = %q, want %q", c, got, want)
		}
	}
}
