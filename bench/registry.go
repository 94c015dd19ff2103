package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/internal/auth"
)

// registryResult is figure 5: the production SQLite registry, in process.
type registryResult struct {
	Rows          int     `json:"rows"`
	WritesPerSec  float64 `json:"register_writes_per_sec"`
	AddLatency    stat    `json:"add_latency"`
	SnapshotAt10k stat    `json:"snapshot_latency"`
}

func measureRegistry(rows, snapReps int) (registryResult, error) {
	res := registryResult{Rows: rows}
	dir, err := os.MkdirTemp("", "clawker-bench-reg-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	reg, err := agent.NewSQLiteWriter(filepath.Join(dir, "registry.db"), nil)
	if err != nil {
		return res, err
	}
	defer reg.Close()
	project, err := auth.NewProjectSlug("bench")
	if err != nil {
		return res, err
	}
	now := time.Now()
	var add sample
	start := time.Now()
	for i := 0; i < rows; i++ {
		name, err := auth.NewAgentName(fmt.Sprintf("a%05d", i))
		if err != nil {
			return res, err
		}
		id := fmt.Sprintf("%064x", sha256.Sum256([]byte(name.String())))
		e := agent.Entry{AgentName: name, Project: project, ContainerID: id[:64],
			Thumbprint: sha256.Sum256([]byte(id)), RegisteredAt: now, LastSeen: now}
		t := time.Now()
		if err := reg.Add(e); err != nil {
			return res, err
		}
		add.addDur(time.Since(t))
	}
	res.WritesPerSec = float64(rows) / time.Since(start).Seconds()
	res.AddLatency = add.stat("ms")
	var snap sample
	for i := 0; i < snapReps; i++ {
		t := time.Now()
		got, err := reg.Snapshot()
		if err != nil {
			return res, err
		}
		snap.addDur(time.Since(t))
		if len(got) != rows {
			return res, fmt.Errorf("snapshot: %d rows, want %d", len(got), rows)
		}
	}
	res.SnapshotAt10k = snap.stat("ms")
	return res, nil
}
