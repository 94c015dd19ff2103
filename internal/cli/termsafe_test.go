package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
)

// osc52 writes "pwned" to the operator's clipboard; csi moves the cursor
// and clears the line, so a forged line could replace a real one.
const (
	osc52  = "\x1b]52;c;cHduZWQ=\x07"
	csi    = "\x1b[2K\x1b[1A"
	c1OSC  = "\u009d52;c;cHduZWQ=\u009c"
	bidi   = "\u202e"
	badUTF = "\xff"
)

// rawControl reports a byte or rune a terminal would act on.
func rawControl(s string) bool {
	for _, r := range s {
		if (r < 0x20 && r != '\n') || (r >= 0x7f && r <= 0x9f) || r == 0x202e || r == 0xfffd {
			return true
		}
	}
	return strings.Contains(s, badUTF)
}

func TestTermSafe(t *testing.T) {
	cases := map[string]string{
		"plain text: ok (12ms)":   "plain text: ok (12ms)",
		"héllo wörld ✓ 日本":        "héllo wörld ✓ 日本",
		"a" + osc52 + "b":         `a\x1b]52;c;cHduZWQ=\x07b`,
		csi:                       `\x1b[2K\x1b[1A`,
		"line1\nline2\ttab\r":     `line1\nline2\ttab\r`,
		c1OSC:                     `\u009d52;c;cHduZWQ=\u009c`,
		"evil" + bidi + "txt.exe": `evil\u202etxt.exe`,
		"x" + badUTF + "\x7f":     `x\xff\x7f`,
	}
	for in, want := range cases {
		if got := termSafe(in); got != want {
			t.Errorf("termSafe(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestEventsAndProgressEscapeAgentStrings: a RegisterDone error, a hook's
// output tail (InitStepFailed.Detail) and a label reach `clawker events`
// (text and JSON), `run` progress and the agents table escaped.
func TestEventsAndProgressEscapeAgentStrings(t *testing.T) {
	evil := osc52 + csi + c1OSC + bidi + badUTF
	events := []*adminv1.Event{
		{Name: "agent_registered", Agent: "dev" + evil, ContainerId: strings.Repeat("a", 64), AtUnixNano: 1,
			Fields: map[string]string{"Ok": "false", "Reason": "register: " + evil}},
		{Name: "init_step_failed", ContainerId: strings.Repeat("a", 64), AtUnixNano: 1,
			Fields: map[string]string{"StepName": "post-init", "Reason": "exit", "Detail": "hook tail\n" + evil}},
		{Name: "init_failed", ContainerId: strings.Repeat("a", 64), AtUnixNano: 1,
			Fields: map[string]string{"FailedStep": "post-init", "Detail": evil}},
	}
	for _, format := range []string{"table", "json"} {
		var out bytes.Buffer
		a := &app{out: &out, now: time.Now}
		for _, ev := range events {
			if err := a.printEvent(ev, format); err != nil {
				t.Fatal(err)
			}
		}
		if rawControl(out.String()) {
			t.Errorf("events -o %s printed a raw control sequence: %q", format, out.String())
		}
		if format == "json" { // still valid JSON, decoding to the same text
			var got struct{ Fields map[string]string }
			if err := json.Unmarshal(bytes.SplitN(out.Bytes(), []byte("\n"), 2)[0], &got); err != nil ||
				!strings.HasPrefix(got.Fields["Reason"], "register: "+osc52+csi+c1OSC+bidi) {
				t.Errorf("events JSON does not round-trip: %v %q", err, got.Fields["Reason"])
			}
		}
	}
	for _, ev := range events {
		line, _ := progressLine(ev)
		if rawControl(termSafe(line)) || !strings.Contains(termSafe(line), `\x1b]52`) {
			t.Errorf("run progress line not escaped: %q", termSafe(line))
		}
	}
	var table bytes.Buffer
	a := &app{out: &table, now: time.Now, newDocker: func() (dockerAPI, error) { return nil, errors.New("no Docker") }}
	if err := a.printAgents(context.Background(), []*adminv1.Agent{{Agent: "dev" + evil, Project: "p" + csi, ContainerId: strings.Repeat("b", 64)}}, "", "table", listFlags{}); err != nil {
		t.Fatal(err)
	}
	if rawControl(table.String()) || !strings.Contains(table.String(), `dev\x1b]52`) {
		t.Errorf("agents table printed a raw control sequence: %q", table.String())
	}
	var js bytes.Buffer
	if err := writeJSON(&js, map[string]string{"agent": evil}); err != nil || rawControl(js.String()) {
		t.Errorf("writeJSON: %v %q", err, js.String())
	}
}

// TestTermSafeTableKeepsLayout: a clean table is laid out unchanged.
func TestTermSafeTableKeepsLayout(t *testing.T) {
	var raw, safe bytes.Buffer
	rows := "AGENT\tPROJECT\nwörker\tweb\n"
	tw := tabwriter.NewWriter(&raw, 0, 4, 2, ' ', 0)
	_, _ = tw.Write([]byte(rows))
	_ = tw.Flush()
	st := termSafeTable{tabwriter.NewWriter(&safe, 0, 4, 2, ' ', 0)}
	_, _ = st.Write([]byte(rows))
	_ = st.Flush()
	if raw.String() != safe.String() {
		t.Fatalf("layout changed:\n%q\n%q", raw.String(), safe.String())
	}
}
