package token

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/clawker/clawker/internal/sqlitedb"
)

// JTIStore remembers redeemed assertion IDs and who redeemed them.
// Consume records jti as redeemed by holder (the redeeming cert's
// thumbprint); fresh is false when jti was already redeemed and has not
// yet expired, and prior is then its recorded holder ("" if unknown).
type JTIStore interface {
	Consume(ctx context.Context, jti, holder string, expiresAt time.Time) (fresh bool, prior string, err error)
}

//go:embed migrations/*.sql
var migrationsFS embed.FS

const jtiVersionTable = "token_jti_goose_version"

// jtiPruneInterval is how often Consume deletes expired rows. Pruning on
// every call doubled the writes on the token path; expired rows are inert
// (their assertions fail the exp check before Consume), so pruning once a
// minute only lets the table hold one extra minute of assertions.
const jtiPruneInterval = time.Minute

// SQLiteJTIStore persists redeemed jti values so a replay stays refused
// across CP restarts. It may share the registry's database file.
type SQLiteJTIStore struct {
	db    *sql.DB
	clock func() time.Time

	mu        sync.Mutex
	lastPrune time.Time
}

// NewSQLiteJTIStore opens (or creates) dbPath and applies the jti schema.
// clock defaults to time.Now and drives expiry pruning.
func NewSQLiteJTIStore(dbPath string, clock func() time.Time) (*SQLiteJTIStore, error) {
	if clock == nil {
		clock = time.Now
	}
	db, err := sqlitedb.Open(dbPath)
	if err != nil {
		return nil, err
	}
	sub, err := fs.Sub(migrationsFS, "migrations")
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("jti migrations: %w", err)
	}
	if err := sqlitedb.Migrate(context.Background(), db, sub, jtiVersionTable); err != nil {
		db.Close()
		return nil, fmt.Errorf("jti schema %s: %w", dbPath, err)
	}
	return &SQLiteJTIStore{db: db, clock: clock}, nil
}

// Close releases the database handle.
func (s *SQLiteJTIStore) Close() error { return s.db.Close() }

// Consume records jti, first pruning expired entries if the last prune is
// over jtiPruneInterval old, so the table stays bounded by the assertions
// redeemed within their lifetime plus one interval. The insert is
// committed before Consume returns fresh=true, so a redeemed jti survives
// a CP restart.
func (s *SQLiteJTIStore) Consume(ctx context.Context, jti, holder string, expiresAt time.Time) (bool, string, error) {
	if jti == "" {
		return false, "", errors.New("jti store: empty jti")
	}
	if err := s.maybePrune(ctx); err != nil {
		return false, "", err
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO token_jti (jti, expires_at, holder) VALUES (?, ?, ?)`, jti, expiresAt.Unix(), holder)
	if err == nil {
		return true, "", nil
	}
	if !sqlitedb.IsUniqueViolation(err) {
		return false, "", fmt.Errorf("jti insert: %w", err)
	}
	prior, _, err := s.Redeemer(ctx, jti)
	if err != nil {
		return false, "", err
	}
	return false, prior, nil
}

// maybePrune deletes expired rows at most once per jtiPruneInterval. A
// failed prune is retried on the next call.
func (s *SQLiteJTIStore) maybePrune(ctx context.Context) error {
	now := s.clock()
	s.mu.Lock()
	due := s.lastPrune.IsZero() || now.Sub(s.lastPrune) >= jtiPruneInterval || now.Before(s.lastPrune)
	if due {
		s.lastPrune = now
	}
	s.mu.Unlock()
	if !due {
		return nil
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM token_jti WHERE expires_at < ?`, now.Unix()); err != nil {
		s.mu.Lock()
		s.lastPrune = time.Time{}
		s.mu.Unlock()
		return fmt.Errorf("jti prune: %w", err)
	}
	return nil
}

// MemoryJTIStore is an in-process JTIStore for tests.
type MemoryJTIStore struct {
	mu    sync.Mutex
	seen  map[string]memoryJTI
	Clock func() time.Time
}

type memoryJTI struct {
	holder  string
	expires time.Time
}

// Consume implements JTIStore.
func (s *MemoryJTIStore) Consume(_ context.Context, jti, holder string, expiresAt time.Time) (bool, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.Clock != nil {
		now = s.Clock()
	}
	if s.seen == nil {
		s.seen = make(map[string]memoryJTI)
	}
	for k, r := range s.seen {
		if r.expires.Before(now) {
			delete(s.seen, k)
		}
	}
	if r, ok := s.seen[jti]; ok {
		return false, r.holder, nil
	}
	s.seen[jti] = memoryJTI{holder: holder, expires: expiresAt}
	return true, "", nil
}
