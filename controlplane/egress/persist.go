package egress

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"time"

	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/egress/policy"
	"github.com/clawker/clawker/internal/sqlitedb"
)

//go:embed migrations/*.sql
var migrationsFS embed.FS

const stateVersionTable = "egress_goose_version"

// stateDB keeps egress blocks and timed grants across CP restarts: an
// operator's block must not lift, nor a grant vanish, because the CP was
// recreated. A nil *stateDB keeps them in memory only.
type stateDB struct{ db *sql.DB }

func openStateDB(ctx context.Context, path string) (*stateDB, error) {
	if path == "" {
		return nil, nil
	}
	db, err := sqlitedb.Open(path)
	if err != nil {
		return nil, err
	}
	sub, err := fs.Sub(migrationsFS, "migrations")
	if err == nil {
		err = sqlitedb.Migrate(ctx, db, sub, stateVersionTable)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("egress state schema %s: %w", path, err)
	}
	return &stateDB{db: db}, nil
}

func (s *stateDB) close() {
	if s != nil {
		s.db.Close()
	}
}

func (s *stateDB) setBlock(ctx context.Context, containerID string, blocked bool) error {
	if s == nil {
		return nil
	}
	var err error
	if blocked {
		_, err = s.db.ExecContext(ctx, `INSERT INTO egress_blocks (container_id, blocked_at) VALUES (?, ?)
			ON CONFLICT (container_id) DO NOTHING`, containerID, time.Now().Unix())
	} else {
		_, err = s.db.ExecContext(ctx, `DELETE FROM egress_blocks WHERE container_id = ?`, containerID)
	}
	if err != nil {
		return fmt.Errorf("persist egress block of %s: %w", containerID, err)
	}
	return nil
}

func (s *stateDB) blocks(ctx context.Context) ([]string, error) {
	if s == nil {
		return nil, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT container_id FROM egress_blocks`)
	if err != nil {
		return nil, fmt.Errorf("load egress blocks: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("load egress blocks: %w", err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// savedGrant is a grant with the agent it was resolved to, so its expiry
// is audited with the same subject after a restart.
type savedGrant struct {
	policy.Grant
	sub overseer.Subject
}

func (s *stateDB) addGrant(ctx context.Context, g savedGrant) error {
	if s == nil {
		return nil
	}
	_, err := s.db.ExecContext(ctx, `INSERT OR REPLACE INTO egress_grants
		(id, agent, host, port, expires_at, container_id, agent_name, project) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		g.ID, g.Agent, g.Host, g.Port, g.Expires.UnixNano(), g.sub.ContainerID, g.sub.AgentName, g.sub.Project)
	if err != nil {
		return fmt.Errorf("persist egress grant %d: %w", g.ID, err)
	}
	return nil
}

func (s *stateDB) deleteGrant(ctx context.Context, id uint64) error {
	if s == nil {
		return nil
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM egress_grants WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete egress grant %d: %w", id, err)
	}
	return nil
}

// grants returns the saved grants not yet expired at now and deletes the
// rest: an expired grant is never restored.
func (s *stateDB) grants(ctx context.Context, now time.Time) ([]savedGrant, error) {
	if s == nil {
		return nil, nil
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM egress_grants WHERE expires_at <= ?`, now.UnixNano()); err != nil {
		return nil, fmt.Errorf("prune egress grants: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, agent, host, port, expires_at, container_id, agent_name, project
		FROM egress_grants ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("load egress grants: %w", err)
	}
	defer rows.Close()
	var out []savedGrant
	for rows.Next() {
		var g savedGrant
		var exp int64
		if err := rows.Scan(&g.ID, &g.Agent, &g.Host, &g.Port, &exp, &g.sub.ContainerID, &g.sub.AgentName, &g.sub.Project); err != nil {
			return nil, fmt.Errorf("load egress grants: %w", err)
		}
		g.Expires = time.Unix(0, exp)
		out = append(out, g)
	}
	return out, rows.Err()
}
