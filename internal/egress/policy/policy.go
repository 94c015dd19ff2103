// Package policy is clawker's egress policy: the typed `egress:` section
// of clawker.yaml, its validation, a built-in default allow set, timed
// per-agent bypass grants, and the matcher the egress gateway asks for
// every DNS query, tunnel and HTTP request. Deny rules win over allow
// rules and grants; anything no rule allows is denied.
package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Policy is the `egress:` section of clawker.yaml. Its yaml tags let the
// config package embed it as is; Validate checks what decoding cannot.
type Policy struct {
	// Defaults turns the built-in allow set on (nil or true) or off.
	Defaults *bool  `yaml:"defaults,omitempty"`
	Allow    []Rule `yaml:"allow,omitempty"`
	Deny     []Rule `yaml:"deny,omitempty"`
}

// Rule names a destination and optionally narrows it to ports and, for
// HTTP, methods and paths.
type Rule struct {
	// Name attributes decisions; empty means "allow[i]" / "deny[i]".
	Name string `yaml:"name,omitempty"`
	// Host is an exact DNS name, a "*." wildcard (any depth of
	// subdomain, not the apex), an IP literal or a CIDR.
	Host string `yaml:"host"`
	// Ports scopes the rule; empty means every port.
	Ports []int `yaml:"ports,omitempty"`
	// Methods, Paths (segment-aware prefixes) and PathRegex (RE2,
	// unanchored) make the rule an HTTP rule: it is then matched per
	// request, which over TLS needs Intercept.
	Methods   []string `yaml:"methods,omitempty"`
	Paths     []string `yaml:"paths,omitempty"`
	PathRegex []string `yaml:"path_regex,omitempty"`
	// WebSocket allows an HTTP Upgrade to websocket on requests the
	// rule matches.
	WebSocket bool `yaml:"websocket,omitempty"`
	// Intercept lets the gateway terminate TLS for this rule's
	// destination so its methods and paths can be checked.
	Intercept bool `yaml:"intercept,omitempty"`
}

// DefaultsEnabled reports whether the built-in allow set applies.
func (p Policy) DefaultsEnabled() bool { return p.Defaults == nil || *p.Defaults }

// FieldError is a validation error at a dotted path below `egress`
// ("allow[2].host"), so an embedding config can map it to a line.
type FieldError struct {
	Path string
	Line int // 0 when unknown
	Msg  string
}

func (e *FieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: egress.%s: %s", e.Line, e.Path, e.Msg)
	}
	return fmt.Sprintf("egress.%s: %s", e.Path, e.Msg)
}

// Validate checks every rule; the first problem is returned as a
// *FieldError.
func (p Policy) Validate() error {
	for _, l := range []struct {
		list  string
		rules []Rule
	}{{"allow", p.Allow}, {"deny", p.Deny}} {
		list := l.list
		for i, r := range l.rules {
			if field, msg := r.check(list); msg != "" {
				return &FieldError{Path: fmt.Sprintf("%s[%d].%s", list, i, field), Msg: msg}
			}
		}
	}
	return nil
}

func (r Rule) check(list string) (field, msg string) {
	if _, err := parseHost(r.Host); err != nil {
		return "host", err.Error()
	}
	for _, p := range r.Ports {
		if p < 1 || p > 65535 {
			return "ports", fmt.Sprintf("port %d is outside 1-65535", p)
		}
	}
	for _, m := range r.Methods {
		if !validMethod(m) {
			return "methods", fmt.Sprintf("%q is not an HTTP method", m)
		}
	}
	for _, p := range r.Paths {
		if !strings.HasPrefix(p, "/") {
			return "paths", fmt.Sprintf("%q must start with /", p)
		}
	}
	for _, re := range r.PathRegex {
		if _, err := regexp.Compile(re); err != nil {
			return "path_regex", fmt.Sprintf("%q: %v", re, err)
		}
	}
	if r.Intercept && !r.httpScoped() {
		return "intercept", "only rules with methods, paths or path_regex need interception"
	}
	if list == "deny" && r.WebSocket {
		return "websocket", "only allow rules grant websocket upgrades"
	}
	return "", ""
}

func (r Rule) httpScoped() bool {
	return len(r.Methods) > 0 || len(r.Paths) > 0 || len(r.PathRegex) > 0
}

func validMethod(m string) bool {
	switch strings.ToUpper(m) {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// Parse decodes a standalone `egress:` section body strictly (unknown
// keys and wrong types are errors) and validates it; errors name a line.
func Parse(data []byte) (Policy, error) {
	var p Policy
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil && !errors.Is(err, io.EOF) {
		return Policy{}, fmt.Errorf("egress: %w", err)
	}
	if err := p.Validate(); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			var root yaml.Node
			if yaml.Unmarshal(data, &root) == nil {
				fe.Line = lineOf(&root, fe.Path)
			}
		}
		return Policy{}, err
	}
	return p, nil
}

// lineOf finds the line of "list[i].field" in a decoded document.
func lineOf(root *yaml.Node, path string) int {
	var list, field string
	var idx int
	if _, err := fmt.Sscanf(strings.NewReplacer("[", " ", "].", " ").Replace(path), "%s %d %s", &list, &idx, &field); err != nil {
		return 0
	}
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	seq := mapValue(n, list)
	if seq == nil || seq.Kind != yaml.SequenceNode || idx >= len(seq.Content) {
		return 0
	}
	item := seq.Content[idx]
	if v := mapValue(item, field); v != nil {
		return v.Line
	}
	return item.Line
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}
