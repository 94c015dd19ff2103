package agent

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clawker/clawker/internal/logger"
	"github.com/clawker/clawker/internal/sqlitedb"
)

func TestSQLiteSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	if err := EnsureSchema(path, logger.Nop()); err != nil {
		t.Fatalf("EnsureSchema: %v", err)
	}
	if err := EnsureSchema(path, logger.Nop()); err != nil {
		t.Fatalf("EnsureSchema must be idempotent: %v", err)
	}
	r, err := NewSQLiteWriter(path, logger.Nop())
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{testEntry(t, 1, "p", "a"), testEntry(t, 2, "", "b")}
	for _, e := range want {
		if err := r.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	r2, err := NewSQLiteWriter(path, logger.Nop())
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer r2.Close()
	for _, e := range want {
		got, err := r2.LookupByContainerID(e.ContainerID)
		if err != nil {
			t.Fatalf("after reopen Lookup(%s): %v", e.ContainerID, err)
		}
		if got.Thumbprint != e.Thumbprint || got.AgentName != e.AgentName || got.Project != e.Project || !got.RegisteredAt.Equal(e.RegisteredAt) {
			t.Fatalf("after reopen got %+v want %+v", got, e)
		}
	}
}

func TestSQLitePragmas(t *testing.T) {
	r := sqliteFactory(t, logger.Nop()).(*SQLiteRegistry)
	var mode string
	if err := r.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q (%v), want wal", mode, err)
	}
	var busy int
	if err := r.db.QueryRow(`PRAGMA busy_timeout`).Scan(&busy); err != nil || busy != int(sqlitedb.BusyTimeout.Milliseconds()) {
		t.Fatalf("busy_timeout = %d (%v)", busy, err)
	}
}

// TestSQLiteHandCorruptedRow writes an empty agent_name with the sqlite3
// CLI (the operator's tool) and checks reads skip it with a log line.
func TestSQLiteHandCorruptedRow(t *testing.T) {
	sqlite3, err := exec.LookPath("sqlite3")
	if err != nil {
		t.Skip("sqlite3 CLI not installed")
	}
	path := filepath.Join(t.TempDir(), "registry.db")
	var buf bytes.Buffer
	r, err := NewSQLiteWriter(path, logger.New(&buf, "debug", "test"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	good, bad := testEntry(t, 1, "p", "good"), testEntry(t, 2, "p", "bad")
	for _, e := range []Entry{good, bad} {
		if err := r.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(sqlite3, path,
		`UPDATE agents SET agent_name = '' WHERE container_id = '`+bad.ContainerID+`';`).CombinedOutput()
	if err != nil {
		t.Fatalf("sqlite3: %v: %s", err, out)
	}

	snap, err := r.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot must not fail on a bad row: %v", err)
	}
	if len(snap) != 1 || snap[0].ContainerID != good.ContainerID {
		t.Fatalf("Snapshot = %+v, want only the good row", snap)
	}
	if !strings.Contains(buf.String(), `"event":"registry_row_malformed"`) || !strings.Contains(buf.String(), bad.ContainerID) {
		t.Fatalf("no registry_row_malformed log line naming the row:\n%s", buf.String())
	}
	if _, err := r.LookupByContainerID(bad.ContainerID); !errors.Is(err, ErrMalformedEntry) {
		t.Fatalf("Lookup(bad) = %v, want ErrMalformedEntry", err)
	}
	// Other corruptions a hand edit can produce.
	for name, stmt := range map[string]string{
		"non-hex thumbprint": `UPDATE agents SET agent_name='bad', thumbprint='zz' WHERE container_id='` + bad.ContainerID + `';`,
		"project with dot":   `UPDATE agents SET thumbprint=lower(hex(randomblob(32))), project='a.b' WHERE container_id='` + bad.ContainerID + `';`,
		"text registered_at": `UPDATE agents SET project='p', registered_at='soon' WHERE container_id='` + bad.ContainerID + `';`,
	} {
		if out, err := exec.Command(sqlite3, path, stmt).CombinedOutput(); err != nil {
			t.Fatalf("%s: sqlite3: %v: %s", name, err, out)
		}
		snap, err := r.Snapshot()
		if err != nil || len(snap) != 1 {
			t.Fatalf("%s: Snapshot = %v, %v; want only the good row", name, snap, err)
		}
		if _, err := r.LookupByContainerID(bad.ContainerID); !errors.Is(err, ErrMalformedEntry) {
			t.Fatalf("%s: Lookup = %v, want ErrMalformedEntry", name, err)
		}
	}
}

func TestSQLiteSnapshotErrorOnQueryFailure(t *testing.T) {
	r, err := NewSQLiteWriter(filepath.Join(t.TempDir(), "r.db"), logger.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Add(testEntry(t, 1, "p", "a")); err != nil {
		t.Fatal(err)
	}
	r.Close()
	snap, err := r.Snapshot()
	if err == nil || snap != nil {
		t.Fatalf("Snapshot on closed db = %v, %v; want nil, error", snap, err)
	}
}

func TestNewSQLiteWriterMissingDir(t *testing.T) {
	if _, err := NewSQLiteWriter(filepath.Join(t.TempDir(), "nope", "r.db"), logger.Nop()); err == nil {
		t.Fatal("want error for missing parent dir")
	}
}
