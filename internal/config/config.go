// Package config reads a project's clawker.yaml into one typed schema and
// merges it with `clawker run` flags and defaults, remembering where each
// effective value came from.
//
// The file is decoded by go.yaml.in/yaml/v3 in strict mode: an unknown key,
// a wrong type or a syntax error is an error naming its line. The JSON
// Schema for editors (docs/clawker.schema.json) describes the same shape;
// a test keeps the two in step.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"go.yaml.in/yaml/v3"

	"github.com/clawker/clawker/internal/egress/policy"
)

// FileName is the project file `clawker run` reads from --project-dir.
const FileName = "clawker.yaml"

// File is the typed clawker.yaml. Every field is optional.
type File struct {
	Image       string            `yaml:"image"`
	Cmd         []string          `yaml:"cmd"`
	User        string            `yaml:"user"`
	Workdir     string            `yaml:"workdir"`
	Env         map[string]string `yaml:"env"`
	EnvFile     []string          `yaml:"env_file"`
	Secrets     map[string]Secret `yaml:"secrets"`
	Volumes     []string          `yaml:"volumes"`
	Resources   Resources         `yaml:"resources"`
	Egress      *Egress           `yaml:"egress"`
	Hooks       Hooks             `yaml:"hooks"`
	State       []string          `yaml:"state"`
	Credentials Credentials       `yaml:"credentials"`
}

// Secret names exactly one host source: a file or an environment variable.
type Secret struct {
	File string `yaml:"file"`
	Env  string `yaml:"env"`
}

// Resources are the container's cgroup limits. Memory is a size with a
// unit ("2g", "512m"); a zero value means "the default".
type Resources struct {
	CPUs      float64 `yaml:"cpus"`
	Memory    string  `yaml:"memory"`
	PidsLimit int64   `yaml:"pids_limit"`
}

// Egress is the project's egress policy, enforced by the CP's egress
// gateway: one type, owned by the policy package, so the file and the
// gateway can never disagree on its shape.
type Egress = policy.Policy

// Hooks are the project's lifecycle scripts (see the README).
type Hooks struct {
	PostInit string `yaml:"post-init"`
	PreRun   string `yaml:"pre-run"`
}

// Credentials opts into credential forwarding: the host's ssh-agent and
// git credentials answered through the CP; no key or token is written
// into the agent (docs/architecture.md, "Credential forwarding").
type Credentials struct {
	SSHAgent bool `yaml:"ssh_agent"`
	Git      bool `yaml:"git"`
}

// Parsed is a decoded file plus the line of every key it set, by dotted
// path ("image", "resources.memory", "env.NODE_ENV", "hooks.pre-run").
type Parsed struct {
	Path  string
	File  File
	Lines map[string]int
}

// Load reads and parses path. A missing file is (nil, nil): a project
// need not have one.
func Load(path string) (*Parsed, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return Parse(path, data)
}

// Parse decodes data strictly and validates it. Errors are prefixed with
// name and carry the YAML line.
func Parse(name string, data []byte) (*Parsed, error) {
	p := &Parsed{Path: name, Lines: map[string]int{}}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&p.File); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("%s: line %d: a second YAML document; clawker.yaml holds one", name, extra.Line)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(root.Content) == 1 {
		collectLines(root.Content[0], "", p.Lines, 0)
	}
	if err := p.File.validate(p.Lines); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// collectLines records the line of each mapping key, two levels deep
// (top-level keys and their children: resources.memory, env.KEY).
func collectLines(n *yaml.Node, prefix string, out map[string]int, depth int) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode || depth > 1 {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := prefix + n.Content[i].Value
		out[k] = n.Content[i].Line
		collectLines(n.Content[i+1], k+".", out, depth+1)
	}
}
