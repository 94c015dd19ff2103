// Package sqlitedb opens the CP's sqlite files with the pragmas every
// clawker handle uses and applies embedded goose migrations. It owns no
// schema: the registry and the token jti store bring their own.
package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// BusyTimeout is how long a connection waits on a lock held by another
// connection before returning SQLITE_BUSY.
const BusyTimeout = 5 * time.Second

// Open opens dbPath with WAL (readers never block the writer), a busy
// timeout and immediate write transactions.
func Open(dbPath string) (*sql.DB, error) {
	if dbPath == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	if strings.ContainsAny(dbPath, "?#") {
		// The path is embedded in a file: URI; these would be parsed as
		// its query or fragment and silently open another file.
		return nil, fmt.Errorf("sqlite: database path %q contains '?' or '#'", dbPath)
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+dbPath+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", dbPath, err)
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", dbPath, err)
	}
	return db, nil
}

// Migrate applies the goose migrations in fsys (NNNNN_name.sql files at
// its root) to db, tracking them in versionTable so several schemas can
// share one file.
func Migrate(ctx context.Context, db *sql.DB, fsys fs.FS, versionTable string) error {
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys,
		goose.WithTableName(versionTable),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return fmt.Errorf("goose provider: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	return nil
}

// IsUniqueViolation reports whether err is a UNIQUE or PRIMARY KEY
// constraint failure.
func IsUniqueViolation(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	c := se.Code()
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}
