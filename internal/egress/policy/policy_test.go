package policy

import (
	"errors"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestParseErrorsNameTheLine(t *testing.T) {
	cases := []struct {
		name, yml, want string
	}{
		{"unknown key", "allow:\n  - host: a.test\n    prot: 22\n", "line 3"},
		{"wrong type", "allow:\n  - host: a.test\n    ports: eighty\n", "line 3"},
		{"bad host", "allow:\n  - host: a.test\n  - host: 'bad host'\n", "line 3: egress.allow[1].host"},
		{"bare star", "deny:\n  - host: '*'\n", "line 2: egress.deny[0].host"},
		{"star one label", "allow:\n  - host: '*.com'\n", "egress.allow[0].host"},
		{"port range", "allow:\n  - host: a.test\n    ports: [0]\n", "line 3: egress.allow[0].ports"},
		{"method", "allow:\n  - host: a.test\n    methods: [FETCH]\n", "line 3: egress.allow[0].methods"},
		{"path", "allow:\n  - host: a.test\n    paths: [v1]\n", "egress.allow[0].paths"},
		{"regex", "allow:\n  - host: a.test\n    path_regex: ['(']\n", "line 3: egress.allow[0].path_regex"},
		{"intercept host-level", "allow:\n  - host: a.test\n    intercept: true\n", "line 3: egress.allow[0].intercept"},
		{"websocket on deny", "deny:\n  - host: a.test\n    websocket: true\n", "egress.deny[0].websocket"},
		{"empty host", "allow:\n  - ports: [1]\n", "egress.allow[0].host"},
		{"defaults type", "defaults: maybe\n", "line 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestParseOK(t *testing.T) {
	p, err := Parse([]byte("defaults: false\nallow:\n  - {name: a, host: '*.a.test', ports: [443], methods: [GET], paths: [/x], intercept: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.DefaultsEnabled() || len(p.Allow) != 1 || p.Allow[0].Host != "*.a.test" || !p.Allow[0].Intercept {
		t.Fatalf("parsed %+v", p)
	}
	if p, err := Parse(nil); err != nil || !p.DefaultsEnabled() {
		t.Fatalf("empty policy = %+v, %v; want defaults on", p, err)
	}
}

// The config package embeds Policy and decodes it strictly itself; the
// path in a FieldError lets it name the line.
func TestEmbeddedStrictDecodeAndFieldPath(t *testing.T) {
	var doc struct {
		Egress Policy `yaml:"egress"`
	}
	dec := yaml.NewDecoder(strings.NewReader("egress:\n  allow:\n    - host: a.test\n      bogus: 1\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("strict embedded decode = %v, want unknown field error", err)
	}
	if err := yaml.Unmarshal([]byte("egress:\n  deny:\n    - host: ok.test\n    - host: ''\n"), &doc); err != nil {
		t.Fatal(err)
	}
	var fe *FieldError
	if err := doc.Egress.Validate(); !errors.As(err, &fe) || fe.Path != "deny[1].host" {
		t.Fatalf("Validate = %v, want FieldError at deny[1].host", err)
	}
}

func TestCompileRefusesInvalid(t *testing.T) {
	if _, err := Compile(Policy{Allow: []Rule{{Host: "a..b"}}}); err == nil {
		t.Fatal("Compile accepted an invalid host")
	}
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{"": "/", "/a/../b": "/b", "/a/b/": "/a/b/", "a": "/a", "//x//y": "/x/y", "/../..": "/"} {
		if got := CleanPath(in); got != want {
			t.Errorf("CleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}
