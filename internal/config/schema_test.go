package config

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

const schemaPath = "../../docs/clawker.schema.json"

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	s, err := jsonschema.NewCompiler().Compile(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// asJSONValue turns YAML into the value jsonschema validates (through
// JSON, so numbers and maps have JSON's types).
func asJSONValue(t *testing.T, y string) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(y), &v); err != nil {
		t.Fatal(err)
	}
	if v == nil {
		v = map[string]any{}
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// docExamples returns the ```yaml blocks of README.md and docs/*.md whose
// first line is "# clawker.yaml".
func docExamples(t *testing.T) map[string]string {
	t.Helper()
	files, _ := filepath.Glob("../../docs/*.md")
	files = append(files, "../../README.md")
	re := regexp.MustCompile("(?s)```yaml\n(# clawker\\.yaml[^\n]*\n.*?)```")
	out := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range re.FindAllStringSubmatch(string(data), -1) {
			out[filepath.Base(f)+"#"+string(rune('1'+i))] = m[1]
		}
	}
	return out
}

// TestDocExamplesValidate: every clawker.yaml example in the docs passes
// both the published JSON Schema and the strict Go parser.
func TestDocExamplesValidate(t *testing.T) {
	s := compileSchema(t)
	ex := docExamples(t)
	if len(ex) == 0 {
		t.Fatal("no clawker.yaml examples found in README.md or docs/")
	}
	ex["fullYAML"] = fullYAML
	for name, y := range ex {
		if err := s.Validate(asJSONValue(t, y)); err != nil {
			t.Errorf("%s: schema: %v", name, err)
		}
		if _, err := Parse(name, []byte(y)); err != nil {
			t.Errorf("%s: parser: %v", name, err)
		}
	}
}

// TestSchemaRejects: the schema refuses what the parser refuses, so an
// editor flags it before clawker run does.
func TestSchemaRejects(t *testing.T) {
	s := compileSchema(t)
	for _, y := range []string{
		"name: web\n",
		"hooks: {on-fire: x}\n",
		"secrets: {t: {env: A, file: b}}\n",
		"secrets: {t: {}}\n",
		"resources: {memory: lots}\n",
		"resources: {pids_limit: -5}\n",
		"env: {CLAWKER_AGENT: x}\n",
		"state: [relative/path]\n",
		"credentials: {ssh_agent: yes-please}\n",
		"egress: {allow: [{ports: [443]}]}\n",
	} {
		if err := s.Validate(asJSONValue(t, y)); err == nil {
			t.Errorf("schema accepted %q", y)
		}
		if _, err := Parse("x", []byte(y)); err == nil {
			t.Errorf("parser accepted %q", y)
		}
	}
}

// TestSchemaCoversFile: the schema names exactly File's keys.
func TestSchemaCoversFile(t *testing.T) {
	data, err := os.ReadFile(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	ft := reflect.TypeOf(File{})
	var keys []string
	for i := 0; i < ft.NumField(); i++ {
		k := strings.Split(ft.Field(i).Tag.Get("yaml"), ",")[0]
		keys = append(keys, k)
		if _, ok := doc.Properties[k]; !ok {
			t.Errorf("schema lacks %q", k)
		}
	}
	if len(doc.Properties) != len(keys) {
		t.Errorf("schema has %d properties, File %d", len(doc.Properties), len(keys))
	}
}
