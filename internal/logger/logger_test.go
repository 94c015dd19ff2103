package logger

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestNewStampsSubSecondTime(t *testing.T) {
	var buf bytes.Buffer
	before := time.Now()
	New(&buf, "info", "test").With("k", "v").Info().Str("event", "x").Msg("m")
	after := time.Now()
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("decode %q: %v", buf.String(), err)
	}
	ts, ok := line["time"].(string)
	if !ok {
		t.Fatalf("no time field in %q", buf.String())
	}
	got, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		t.Fatalf("parse %q: %v", ts, err)
	}
	if dot := strings.IndexByte(ts, '.'); dot < 0 || len(ts) < dot+10 || strings.ContainsAny(ts[dot+1:dot+10], ":Z+-") {
		t.Errorf("time %q: want 9 fractional digits", ts)
	}
	// Truncation to seconds would put got before `before` most of the time;
	// nanosecond precision puts it within [before, after] always.
	if got.Before(before) || got.After(after) {
		t.Errorf("time %v not within [%v, %v]", got, before, after)
	}
	if line["component"] != "test" || line["k"] != "v" || line["event"] != "x" {
		t.Errorf("fields lost: %q", buf.String())
	}
	if n := bytes.Count(buf.Bytes(), []byte(`"time"`)); n != 1 {
		t.Errorf("time field appears %d times: %q", n, buf.String())
	}
}

func TestNewLeavesZerologGlobalsAlone(t *testing.T) {
	format := zerolog.TimeFieldFormat
	New(&bytes.Buffer{}, "debug", "test").Info().Msg("m")
	if zerolog.TimeFieldFormat != format {
		t.Errorf("zerolog.TimeFieldFormat changed to %q", zerolog.TimeFieldFormat)
	}
}

func TestNewLevelFilters(t *testing.T) {
	var buf bytes.Buffer
	New(&buf, "warn", "test").Info().Msg("dropped")
	if buf.Len() != 0 {
		t.Errorf("info below warn level written: %q", buf.String())
	}
}
