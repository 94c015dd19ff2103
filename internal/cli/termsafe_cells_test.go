package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
)

// TestAgentsTableEscapesTabsAndNewlinesInCells: an agent name holding only
// a tab and a newline (no other control character) must not shift the
// columns or forge a row of its own.
func TestAgentsTableEscapesTabsAndNewlinesInCells(t *testing.T) {
	var out bytes.Buffer
	a := &app{out: &out, now: time.Now, newDocker: func() (dockerAPI, error) { return nil, errors.New("no Docker") }}
	evil := "dev\tTRUSTED\nforged\tproj"
	if err := a.printAgents(context.Background(), []*adminv1.Agent{{Agent: evil, Project: "p", ContainerId: strings.Repeat("b", 64)}}, "", "table", listFlags{}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want a header and one row, got %d lines: %q", len(lines), out.String())
	}
	if !strings.HasPrefix(lines[1], `dev\tTRUSTED\nforged\tproj `) {
		t.Fatalf("the cell was not escaped as one: %q", lines[1])
	}
	// The table's own separators still align the columns.
	if strings.Contains(out.String(), "\t") || strings.Index(lines[0], "PROJECT") != strings.Index(lines[1], "p ") {
		t.Fatalf("columns misaligned:\n%s", out.String())
	}
}

// TestProgressErrorsTermSafe: the errors showProgress prints (the CP's, or
// the local ones quoting a path) are escaped like any other agent text.
func TestProgressErrorsTermSafe(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h\x1b]52;c;cHduZWQ=\x07")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	a := &app{out: &out, now: time.Now, homeFlag: home}
	a.showProgress(context.Background(), &out, "p", "dev", strings.Repeat("a", 64))
	if !strings.Contains(out.String(), "no init progress") || rawControl(out.String()) || !strings.Contains(out.String(), `\x1b]52`) {
		t.Fatalf("progress error not escaped: %q", out.String())
	}
}
