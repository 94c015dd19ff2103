package agent

import (
	"context"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/logger"
	"github.com/clawker/clawker/internal/sqlitedb"
)

//go:embed migrations/*.sql
var migrationsFS embed.FS

// registryVersionTable is goose's version table for the agents schema.
// Named explicitly so other packages (the token jti store) can keep their
// own goose history in the same database file without colliding.
const registryVersionTable = "agent_registry_goose_version"

// SQLiteRegistry is the persisted Registry. The CP is its sole writer.
type SQLiteRegistry struct {
	db  *sql.DB
	log *logger.Logger
}

var _ Registry = (*SQLiteRegistry)(nil)

func applyRegistrySchema(db *sql.DB) error {
	sub, err := fs.Sub(migrationsFS, "migrations")
	if err != nil {
		return fmt.Errorf("registry migrations: %w", err)
	}
	return sqlitedb.Migrate(context.Background(), db, sub, registryVersionTable)
}

// EnsureSchema opens the database in writer mode (creating the file if
// missing), applies the schema, and closes.
func EnsureSchema(dbPath string, log *logger.Logger) error {
	log = logger.OrNop(log)
	db, err := sqlitedb.Open(dbPath)
	if err != nil {
		log.Error().Err(err).Str("event", "registry_schema_failed").Msg("open registry db")
		return err
	}
	defer db.Close()
	if err := applyRegistrySchema(db); err != nil {
		log.Error().Err(err).Str("event", "registry_schema_failed").Msg("apply registry schema")
		return fmt.Errorf("registry schema %s: %w", dbPath, err)
	}
	log.Info().Str("event", "registry_schema_ready").Str("path", dbPath).Msg("registry schema applied")
	return nil
}

// NewSQLiteWriter opens (or creates) the sqlite database at dbPath, applies
// the schema, and returns the registry. The parent directory must exist.
func NewSQLiteWriter(dbPath string, log *logger.Logger) (*SQLiteRegistry, error) {
	db, err := sqlitedb.Open(dbPath)
	if err != nil {
		return nil, err
	}
	if err := applyRegistrySchema(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("registry schema %s: %w", dbPath, err)
	}
	return &SQLiteRegistry{db: db, log: logger.OrNop(log)}, nil
}

// Close releases the database handle.
func (r *SQLiteRegistry) Close() error { return r.db.Close() }

// Add inserts entry. A UNIQUE collision on container_id or thumbprint is
// reported wrapping errDuplicateEntry.
func (r *SQLiteRegistry) Add(entry Entry) error {
	if err := validateEntry(entry); err != nil {
		return fmt.Errorf("registry add: %w", err)
	}
	entry = normalizeEntry(entry)
	_, err := r.db.Exec(`INSERT INTO agents (container_id, thumbprint, project, agent_name, registered_at, last_seen)
		VALUES (?, ?, ?, ?, ?, ?)`,
		entry.ContainerID, auth.ThumbprintHex(entry.Thumbprint), entry.Project.String(),
		entry.AgentName.String(), entry.RegisteredAt.UnixNano(), entry.LastSeen.UnixNano())
	if err != nil {
		if sqlitedb.IsUniqueViolation(err) {
			return fmt.Errorf("registry add %s: %w", entry.ContainerID, errDuplicateEntry)
		}
		r.log.Error().Err(err).Str("event", "registry_write_failed").Str("container_id", entry.ContainerID).Msg("registry insert failed")
		return fmt.Errorf("registry add %s: %w", entry.ContainerID, err)
	}
	r.log.Info().Str("event", "registry_add").Str("container_id", entry.ContainerID).
		Str("agent", auth.AgentFullName(entry.Project, entry.AgentName)).
		Str("thumbprint", auth.ThumbprintHex(entry.Thumbprint)).Msg("registry row added")
	return nil
}

// LookupByContainerID returns the row for containerID, ErrUnknownAgent when
// there is none, or an error wrapping ErrMalformedEntry when the row fails
// re-validation.
func (r *SQLiteRegistry) LookupByContainerID(containerID string) (*Entry, error) {
	row := r.db.QueryRow(`SELECT container_id, thumbprint, project, agent_name, registered_at, last_seen
		FROM agents WHERE container_id = ?`, containerID)
	var raw rawRow
	if err := row.Scan(&raw.containerID, &raw.thumbprint, &raw.project, &raw.agentName, &raw.registeredAt, &raw.lastSeen); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrUnknownAgent
		}
		return nil, fmt.Errorf("registry lookup %s: %w", containerID, err)
	}
	e, err := raw.entry()
	if err != nil {
		r.log.Warn().Err(err).Str("event", "registry_row_malformed").Str("container_id", containerID).Msg("registry row failed re-validation")
		return nil, fmt.Errorf("registry lookup %s: %w", containerID, err)
	}
	return &e, nil
}

// EvictByContainerID deletes the row for containerID, if any.
func (r *SQLiteRegistry) EvictByContainerID(containerID string) error {
	res, err := r.db.Exec(`DELETE FROM agents WHERE container_id = ?`, containerID)
	if err != nil {
		return fmt.Errorf("registry evict %s: %w", containerID, err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		r.log.Info().Str("event", "registry_evict").Str("container_id", containerID).Msg("registry row evicted")
	}
	return nil
}

// Snapshot returns every valid row sorted by (Project, AgentName). Rows that
// fail re-validation are skipped and logged (event=registry_row_malformed);
// a query failure returns an error, never a partial result.
func (r *SQLiteRegistry) Snapshot() ([]Entry, error) {
	rows, err := r.db.Query(`SELECT container_id, thumbprint, project, agent_name, registered_at, last_seen FROM agents`)
	if err != nil {
		return nil, fmt.Errorf("registry snapshot: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var raw rawRow
		if err := rows.Scan(&raw.containerID, &raw.thumbprint, &raw.project, &raw.agentName, &raw.registeredAt, &raw.lastSeen); err != nil {
			// A column of the wrong storage class (hand edit) fails Scan;
			// skip the row like any other malformed one.
			r.log.Warn().Err(err).Str("event", "registry_row_malformed").Msg("registry row unreadable")
			continue
		}
		e, err := raw.entry()
		if err != nil {
			r.log.Warn().Err(err).Str("event", "registry_row_malformed").Str("container_id", raw.containerID).Msg("registry row failed re-validation; skipped")
			continue
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("registry snapshot: %w", err)
	}
	sortEntries(out)
	if out == nil {
		out = []Entry{}
	}
	return out, nil
}

// rawRow is a row as stored, before re-validation.
type rawRow struct {
	containerID, thumbprint, project, agentName string
	// Scanned as any: a hand edit can store TEXT in an INTEGER column, and
	// that must surface as a malformed row, not a query failure.
	registeredAt, lastSeen any
}

// entry re-validates a stored row into an Entry. Every error wraps
// ErrMalformedEntry.
func (r rawRow) entry() (Entry, error) {
	tb, err := hex.DecodeString(r.thumbprint)
	if err != nil || len(tb) != 32 || r.thumbprint != strings.ToLower(r.thumbprint) {
		return Entry{}, fmt.Errorf("%w: thumbprint %q", ErrMalformedEntry, r.thumbprint)
	}
	name, err := auth.NewAgentName(r.agentName)
	if err != nil {
		return Entry{}, fmt.Errorf("%w: %v", ErrMalformedEntry, err)
	}
	proj, err := auth.NewProjectSlug(r.project)
	if err != nil {
		return Entry{}, fmt.Errorf("%w: %v", ErrMalformedEntry, err)
	}
	e := Entry{
		AgentName:   name,
		Project:     proj,
		ContainerID: r.containerID,
	}
	copy(e.Thumbprint[:], tb)
	reg, ok1 := r.registeredAt.(int64)
	seen, ok2 := r.lastSeen.(int64)
	if !ok1 || !ok2 {
		return Entry{}, fmt.Errorf("%w: non-integer timestamps", ErrMalformedEntry)
	}
	if reg != 0 {
		e.RegisteredAt = time.Unix(0, reg).UTC()
	}
	if seen != 0 {
		e.LastSeen = time.Unix(0, seen).UTC()
	}
	if err := validateEntry(e); err != nil {
		return Entry{}, err
	}
	return e, nil
}
