package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestParseInputs is the table of ordinary YAML inputs (the old
// hand-written parser got most of them wrong): each gives the right value
// or an error naming its line.
func TestParseInputs(t *testing.T) {
	cases := []struct {
		name    string
		yaml    string
		want    Hooks
		wantErr string // substring; "" = must parse
	}{
		{"flow form", "hooks: {post-init: echo hi, pre-run: 'echo ready'}\n",
			Hooks{PostInit: "echo hi", PreRun: "echo ready"}, ""},
		{"comment after hooks:", "hooks: # the project's hooks\n  pre-run: echo x\n",
			Hooks{PreRun: "echo x"}, ""},
		{"tab indentation", "hooks:\n\tpre-run: echo x\n", Hooks{}, "line 2"},
		{"block with comment", "hooks:\n  post-init: | # install once\n    npm ci\n    echo done\n",
			Hooks{PostInit: "npm ci\necho done\n"}, ""},
		{"explicit indent |2", "hooks:\n  post-init: |2\n      indented\n    flush\n",
			Hooks{PostInit: "  indented\nflush\n"}, ""},
		{"single-quoted escape", "hooks:\n  pre-run: 'echo it''s'\n", Hooks{PreRun: "echo it's"}, ""},
		{"folded >", "hooks:\n  pre-run: >\n    echo one\n    two\n", Hooks{PreRun: "echo one two\n"}, ""},
		{"strip |-", "hooks:\n  pre-run: |-\n    echo a\n", Hooks{PreRun: "echo a"}, ""},
		{"double-quoted escapes", "hooks:\n  pre-run: \"printf 'a\\tb\\n'\"\n", Hooks{PreRun: "printf 'a\tb\n'"}, ""},
		{"unknown top-level key", "image: node:22\nname: web\n", Hooks{}, "line 2: field name not found"},
		{"unknown hook", "hooks:\n  pre-run: echo\n  on-fire: rm -rf /\n", Hooks{}, "line 3: field on-fire not found"},
		{"wrong type", "resources:\n  cpus: lots\n", Hooks{}, "line 2"},
		{"secret with both sources", "secrets:\n  tok:\n    env: TOK\n    file: ~/.tok\n", Hooks{}, "line 2: secrets.tok: give exactly one"},
		{"CLAWKER_ env", "env:\n  CLAWKER_AGENT: x\n", Hooks{}, "line 2: env.CLAWKER_AGENT"},
		{"bad memory", "resources:\n  memory: lots\n", Hooks{}, "line 1: resources: memory"},
		{"state outside home", "state: [\"~/../etc\"]\n", Hooks{}, "line 1: state"},
		{"two documents", "image: a\n---\nimage: b\n", Hooks{}, "line 2: a second YAML document"},
		{"empty file", "", Hooks{}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse("clawker.yaml", []byte(tc.yaml))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "clawker.yaml: ") {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.File.Hooks != tc.want {
				t.Fatalf("hooks %q, want %q", p.File.Hooks, tc.want)
			}
		})
	}
}

const fullYAML = `image: node:22
cmd: [claude, --dangerously-skip-permissions]
user: node
workdir: /workspace
env:
  NODE_ENV: development
env_file: [.env]
secrets:
  github_token: {env: GITHUB_TOKEN}
  npmrc: {file: ~/.npmrc}
volumes: [".:/workspace"]
resources:
  cpus: 2
  memory: 4g
  pids_limit: 1024
egress:
  allow: [{host: registry.npmjs.org, ports: [443]}]
state: [~/.claude]
credentials: {ssh_agent: false, git: false}
`

func TestParseFullSchema(t *testing.T) {
	p, err := Parse("clawker.yaml", []byte(fullYAML))
	if err != nil {
		t.Fatal(err)
	}
	f := p.File
	if f.Image != "node:22" || !reflect.DeepEqual(f.Cmd, []string{"claude", "--dangerously-skip-permissions"}) ||
		f.User != "node" || f.Workdir != "/workspace" || f.Env["NODE_ENV"] != "development" ||
		f.Secrets["github_token"].Env != "GITHUB_TOKEN" || f.Secrets["npmrc"].File != "~/.npmrc" ||
		f.Resources != (Resources{CPUs: 2, Memory: "4g", PidsLimit: 1024}) ||
		f.Egress == nil || f.Egress.Allow[0].Host != "registry.npmjs.org" || f.State[0] != "~/.claude" {
		t.Fatalf("decoded %+v", f)
	}
	if p.Lines["resources.memory"] != 14 || p.Lines["image"] != 1 || p.Lines["env.NODE_ENV"] != 6 {
		t.Fatalf("lines %v", p.Lines)
	}
}

// TestPrecedence: flags over the file over the defaults, with the source
// of each value recorded.
func TestPrecedence(t *testing.T) {
	p, err := Parse("/p/clawker.yaml", []byte(fullYAML))
	if err != nil {
		t.Fatal(err)
	}
	// No flags: file values, defaults where the file is silent.
	e, err := Merge(p, Flags{})
	if err != nil {
		t.Fatal(err)
	}
	if e.Memory.V != "4g" || e.Memory.From.String() != "/p/clawker.yaml:14" || e.PidsLimit.V != 1024 {
		t.Fatalf("file values: %+v %+v", e.Memory, e.PidsLimit)
	}
	// No file: defaults.
	d, err := Merge(nil, Flags{})
	if err != nil {
		t.Fatal(err)
	}
	if d.PidsLimit.V != DefaultPidsLimit || d.PidsLimit.From.String() != "default" || d.Memory.V != "" || d.CPUs.V != 0 {
		t.Fatalf("defaults: %+v", d)
	}
	// Flags win over the file; env merges by key, lists add.
	mem, cpus, user := "1g", 0.5, "1000"
	e, err = Merge(p, Flags{Memory: &mem, CPUs: &cpus, User: &user, Env: []string{"NODE_ENV=production"},
		Volumes: []string{"cache:/cache"}, State: []string{"~/.config"}})
	if err != nil {
		t.Fatal(err)
	}
	if e.Memory.V != "1g" || e.Memory.From.String() != "flag --memory" || e.CPUs.V != 0.5 || e.User.V != "1000" {
		t.Fatalf("flags: %+v %+v %+v", e.Memory, e.CPUs, e.User)
	}
	if e.PidsLimit.V != 1024 || e.PidsLimit.From.Line != 15 {
		t.Fatalf("file value beside flags: %+v", e.PidsLimit)
	}
	if got := e.EnvList(); !reflect.DeepEqual(got, []string{"NODE_ENV=production"}) {
		t.Fatalf("env %v", got)
	}
	if len(e.Volumes) != 2 || len(e.State) != 2 || e.State[1].From.String() != "flag --state" {
		t.Fatalf("lists %+v %+v", e.Volumes, e.State)
	}
	bad := "lots"
	if _, err := Merge(p, Flags{Memory: &bad}); err == nil {
		t.Fatal("bad --memory accepted")
	}
}

func TestEnvFilesAndSecrets(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte("# c\nA=from-file\nB='quoted value'\nexport C=3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tok"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Parse(filepath.Join(dir, FileName), []byte("env_file: [.env]\nenv: {B: from-yaml}\nsecrets:\n  t: {file: tok}\n  e: {env: CONFIG_TEST_SECRET}\n"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Merge(p, Flags{Env: []string{"C=flag"}})
	if err != nil {
		t.Fatal(err)
	}
	env, err := e.ResolveEnv(dir)
	if err != nil {
		t.Fatal(err)
	}
	e.Env = env
	if got := e.EnvList(); !reflect.DeepEqual(got, []string{"A=from-file", "B=from-yaml", "C=flag"}) {
		t.Fatalf("env %v", got)
	}
	if _, err := e.ReadSecrets(dir); err == nil || !strings.Contains(err.Error(), "CONFIG_TEST_SECRET is not set") {
		t.Fatalf("missing secret variable: %v", err)
	}
	t.Setenv("CONFIG_TEST_SECRET", "v")
	s, err := e.ReadSecrets(dir)
	if err != nil || string(s["t"]) != "s3cret\n" || string(s["e"]) != "v" {
		t.Fatalf("secrets %q %v", s, err)
	}
	var out strings.Builder
	if err := e.Show(&out, env); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "s3cret") || !strings.Contains(out.String(), "env CONFIG_TEST_SECRET") {
		t.Fatalf("show: %s", out.String())
	}
}
