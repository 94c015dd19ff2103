package config

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/joho/godotenv"
)

// HostPath expands a leading ~/ to the host user's home and makes a
// relative path relative to base (the project dir for file values, the
// working directory for flags).
func HostPath(p, base string) (string, error) {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		hd, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("expand %s: %w", p, err)
		}
		return filepath.Join(hd, rest), nil
	}
	if filepath.IsAbs(p) || base == "" {
		return p, nil
	}
	return filepath.Join(base, p), nil
}

// baseFor is the directory relative paths of a value resolve against.
func baseFor(s Source, projectDir string) string {
	if s.Kind == "file" {
		return projectDir
	}
	return ""
}

// ResolveEnv reads the env files (dotenv syntax, github.com/joho/godotenv)
// and returns the final env: file env_file < file env < --env-file < -e.
func (e *Effective) ResolveEnv(projectDir string) ([]Value[string], error) {
	var fileFiles, flagFiles []Value[string]
	for _, ef := range e.EnvFile {
		if ef.From.Kind == "flag" {
			flagFiles = append(flagFiles, ef)
		} else {
			fileFiles = append(fileFiles, ef)
		}
	}
	read := func(files []Value[string]) ([]Value[string], error) {
		var out []Value[string]
		for _, ef := range files {
			p, err := HostPath(ef.V, baseFor(ef.From, projectDir))
			if err != nil {
				return nil, err
			}
			m, err := godotenv.Read(p)
			if err != nil {
				return nil, fmt.Errorf("env file %s (%s): %w", ef.V, ef.From, err)
			}
			for _, k := range sortedKeys(m) {
				if err := CheckEnvKey(k); err != nil {
					return nil, fmt.Errorf("env file %s: %w", ef.V, err)
				}
				out = append(out, Value[string]{k + "=" + m[k], Source{Kind: "env-file", Name: p}})
			}
		}
		return out, nil
	}
	var fileEnv, flagEnv []Value[string]
	for _, v := range e.Env {
		if v.From.Kind == "flag" {
			flagEnv = append(flagEnv, v)
		} else {
			fileEnv = append(fileEnv, v)
		}
	}
	a, err := read(fileFiles)
	if err != nil {
		return nil, err
	}
	b, err := read(flagFiles)
	if err != nil {
		return nil, err
	}
	out := append(append(append(a, fileEnv...), b...), flagEnv...)
	return out, nil
}

// ReadSecrets reads every secret's value from its host source. A missing
// variable or unreadable file is an error naming the secret, never an
// empty secret.
func (e *Effective) ReadSecrets(projectDir string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(e.Secrets))
	for _, name := range e.SecretNames() {
		s := e.Secrets[name]
		if s.V.Env != "" {
			v, ok := os.LookupEnv(s.V.Env)
			if !ok {
				return nil, fmt.Errorf("secret %s (%s): host variable %s is not set", name, s.From, s.V.Env)
			}
			out[name] = []byte(v)
			continue
		}
		p, err := HostPath(s.V.File, baseFor(s.From, projectDir))
		if err != nil {
			return nil, err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("secret %s (%s): %w", name, s.From, err)
		}
		out[name] = data
	}
	return out, nil
}

// Show prints the effective config, one setting a line, with its source.
// Secret values are never printed: only where they come from.
func (e *Effective) Show(w io.Writer, env []Value[string]) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string, s Source) { fmt.Fprintf(tw, "%s\t%s\t%s\n", k, v, s) }
	row("image", orDash(e.Image.V), e.Image.From)
	row("cmd", orDash(strings.Join(quoteAll(e.Cmd.V), " ")), e.Cmd.From)
	row("user", orDash(e.User.V), e.User.From)
	row("workdir", orDash(e.Workdir.V), e.Workdir.From)
	cpus := "unlimited"
	if e.CPUs.V > 0 {
		cpus = strconv.FormatFloat(e.CPUs.V, 'f', -1, 64)
	}
	row("resources.cpus", cpus, e.CPUs.From)
	row("resources.memory", orDefault(e.Memory.V, "unlimited"), e.Memory.From)
	pids := strconv.FormatInt(e.PidsLimit.V, 10)
	if e.PidsLimit.V == -1 {
		pids = "unlimited"
	}
	row("resources.pids_limit", pids, e.PidsLimit.From)
	for _, v := range lastPerKey(env) {
		k, val, _ := strings.Cut(v.V, "=")
		row("env."+k, strconv.Quote(val), v.From)
	}
	for _, v := range e.EnvFile {
		row("env_file", v.V, v.From)
	}
	for _, name := range e.SecretNames() {
		s := e.Secrets[name]
		src := "file " + s.V.File
		if s.V.Env != "" {
			src = "env " + s.V.Env
		}
		row("secrets."+name, src, s.From)
	}
	for _, v := range e.Volumes {
		row("volumes", v.V, v.From)
	}
	for _, v := range e.State {
		row("state", v.V, v.From)
	}
	if e.Hooks.V.PostInit != "" {
		row("hooks.post-init", fmt.Sprintf("(%d bytes)", len(e.Hooks.V.PostInit)), e.Hooks.From)
	}
	if e.Hooks.V.PreRun != "" {
		row("hooks.pre-run", fmt.Sprintf("(%d bytes)", len(e.Hooks.V.PreRun)), e.Hooks.From)
	}
	if g := e.Egress.V; g != nil {
		row("egress", fmt.Sprintf("%d allow, %d deny", len(g.Allow), len(g.Deny)), e.Egress.From)
	}
	c := e.Credentials.V
	row("credentials", fmt.Sprintf("ssh_agent=%t git=%t", c.SSHAgent, c.Git), e.Credentials.From)
	return tw.Flush()
}

func quoteAll(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		if s == "" || strings.ContainsAny(s, " \t\"'") {
			s = strconv.Quote(s)
		}
		out[i] = s
	}
	return out
}

func orDash(s string) string { return orDefault(s, "-") }

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// lastPerKey keeps the winning entry of each env key, in first-seen order.
func lastPerKey(env []Value[string]) []Value[string] {
	idx := map[string]int{}
	var out []Value[string]
	for _, v := range env {
		k, _, _ := strings.Cut(v.V, "=")
		if i, ok := idx[k]; ok {
			out[i] = v
			continue
		}
		idx[k] = len(out)
		out = append(out, v)
	}
	return out
}
