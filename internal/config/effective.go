package config

import (
	"fmt"
	"sort"
	"strings"
)

// DefaultPidsLimit caps the processes of one agent container: enough for
// builds and language servers, small enough that a fork bomb stops in its
// own cgroup.
const DefaultPidsLimit = 4096

// Source says where an effective value came from.
type Source struct {
	Kind string // "flag", "file", "env-file" or "default"
	Name string // the flag ("--cpus") or the file path
	Line int    // file line, when known
}

func (s Source) String() string {
	switch s.Kind {
	case "flag":
		return "flag " + s.Name
	case "file", "env-file":
		if s.Line > 0 {
			return fmt.Sprintf("%s:%d", s.Name, s.Line)
		}
		return s.Name
	}
	return s.Kind
}

var defaultSrc = Source{Kind: "default"}

// Value is one effective setting and where it came from.
type Value[T any] struct {
	V    T
	From Source
}

// Flags are the `clawker run` settings typed on the command line. A nil
// pointer or empty slice means "not given".
type Flags struct {
	Image     *string
	Cmd       []string
	User      *string
	Workdir   *string
	Env       []string // KEY=VALUE, already resolved by the CLI
	EnvFile   []string
	Volumes   []string
	CPUs      *float64
	Memory    *string
	PidsLimit *int64
	State     []string
}

// Effective is the merged configuration: flags over the file over
// defaults. Scalars are replaced; list flags (volumes, state, env files)
// add to the file's list; env merges by key with the flag winning.
type Effective struct {
	Image       Value[string]
	Cmd         Value[[]string]
	User        Value[string]
	Workdir     Value[string]
	Env         []Value[string] // "KEY=VALUE", in order, last key wins
	EnvFile     []Value[string]
	Secrets     map[string]Value[Secret]
	Volumes     []Value[string]
	CPUs        Value[float64]
	Memory      Value[string]
	PidsLimit   Value[int64]
	Egress      Value[*Egress]
	Hooks       Value[Hooks]
	State       []Value[string]
	Credentials Value[Credentials]
}

// Merge builds the effective config. p may be nil (no file).
func Merge(p *Parsed, fl Flags) (*Effective, error) {
	e := &Effective{
		Image: Value[string]{From: defaultSrc}, Cmd: Value[[]string]{From: defaultSrc},
		User: Value[string]{From: defaultSrc}, Workdir: Value[string]{From: defaultSrc},
		CPUs: Value[float64]{From: defaultSrc}, Memory: Value[string]{From: defaultSrc},
		PidsLimit:   Value[int64]{V: DefaultPidsLimit, From: defaultSrc},
		Egress:      Value[*Egress]{From: defaultSrc},
		Hooks:       Value[Hooks]{From: defaultSrc},
		Credentials: Value[Credentials]{From: defaultSrc},
		Secrets:     map[string]Value[Secret]{},
	}
	if p != nil {
		f := &p.File
		src := func(key string) Source { return Source{Kind: "file", Name: p.Path, Line: p.Lines[key]} }
		setIf(&e.Image, f.Image, f.Image != "", src("image"))
		setIf(&e.Cmd, f.Cmd, len(f.Cmd) > 0, src("cmd"))
		setIf(&e.User, f.User, f.User != "", src("user"))
		setIf(&e.Workdir, f.Workdir, f.Workdir != "", src("workdir"))
		setIf(&e.CPUs, f.Resources.CPUs, f.Resources.CPUs != 0, src("resources.cpus"))
		setIf(&e.Memory, f.Resources.Memory, f.Resources.Memory != "", src("resources.memory"))
		setIf(&e.PidsLimit, f.Resources.PidsLimit, f.Resources.PidsLimit != 0, src("resources.pids_limit"))
		setIf(&e.Egress, f.Egress, f.Egress != nil, src("egress"))
		setIf(&e.Hooks, f.Hooks, f.Hooks != (Hooks{}), src("hooks"))
		setIf(&e.Credentials, f.Credentials, f.Credentials != (Credentials{}), src("credentials"))
		for _, v := range f.EnvFile {
			e.EnvFile = append(e.EnvFile, Value[string]{V: v, From: src("env_file")})
		}
		for _, k := range sortedKeys(f.Env) {
			e.Env = append(e.Env, Value[string]{V: k + "=" + f.Env[k], From: src("env." + k)})
		}
		for _, k := range sortedKeys(f.Secrets) {
			e.Secrets[k] = Value[Secret]{V: f.Secrets[k], From: src("secrets." + k)}
		}
		for _, v := range f.Volumes {
			e.Volumes = append(e.Volumes, Value[string]{V: v, From: src("volumes")})
		}
		for _, v := range f.State {
			e.State = append(e.State, Value[string]{V: v, From: src("state")})
		}
	}
	flag := func(n string) Source { return Source{Kind: "flag", Name: n} }
	if fl.Image != nil {
		e.Image = Value[string]{*fl.Image, flag("IMAGE")}
	}
	if len(fl.Cmd) > 0 {
		e.Cmd = Value[[]string]{fl.Cmd, flag("CMD")}
	}
	if fl.User != nil {
		e.User = Value[string]{*fl.User, flag("--user")}
	}
	if fl.Workdir != nil {
		e.Workdir = Value[string]{*fl.Workdir, flag("--workdir")}
	}
	if fl.CPUs != nil {
		e.CPUs = Value[float64]{*fl.CPUs, flag("--cpus")}
	}
	if fl.Memory != nil {
		e.Memory = Value[string]{*fl.Memory, flag("--memory")}
	}
	if fl.PidsLimit != nil {
		e.PidsLimit = Value[int64]{*fl.PidsLimit, flag("--pids-limit")}
	}
	for _, v := range fl.EnvFile {
		e.EnvFile = append(e.EnvFile, Value[string]{v, flag("--env-file")})
	}
	for _, v := range fl.Env {
		e.Env = append(e.Env, Value[string]{v, flag("--env")})
	}
	for _, v := range fl.Volumes {
		e.Volumes = append(e.Volumes, Value[string]{v, flag("--volume")})
	}
	for _, v := range fl.State {
		e.State = append(e.State, Value[string]{v, flag("--state")})
	}
	return e, e.check()
}

// check validates what flags may have brought in (the file was validated
// when parsed).
func (e *Effective) check() error {
	if err := (Resources{CPUs: e.CPUs.V, Memory: e.Memory.V, PidsLimit: e.PidsLimit.V}).check(); err != nil {
		return err
	}
	for _, v := range e.Volumes {
		if err := CheckVolume(v.V); err != nil {
			return err
		}
	}
	for _, v := range e.State {
		if err := CheckStatePath(v.V); err != nil {
			return err
		}
	}
	return nil
}

func setIf[T any](dst *Value[T], v T, ok bool, src Source) {
	if ok {
		*dst = Value[T]{V: v, From: src}
	}
}

// EnvList returns the env as KEY=VALUE with later entries replacing
// earlier ones of the same key, in first-seen order.
func (e *Effective) EnvList() []string {
	idx := map[string]int{}
	var out []string
	for _, v := range e.Env {
		k, _, _ := strings.Cut(v.V, "=")
		if i, ok := idx[k]; ok {
			out[i] = v.V
			continue
		}
		idx[k] = len(out)
		out = append(out, v.V)
	}
	return out
}

// SecretNames returns the secret names sorted.
func (e *Effective) SecretNames() []string {
	out := make([]string, 0, len(e.Secrets))
	for k := range e.Secrets {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
