package agent

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/logger"
)

// registryFactory builds a fresh, empty registry for one subtest.
type registryFactory func(t *testing.T, log *logger.Logger) Registry

func memoryFactory(t *testing.T, log *logger.Logger) Registry { return NewRegistry(log) }

func sqliteFactory(t *testing.T, log *logger.Logger) Registry {
	t.Helper()
	r, err := NewSQLiteWriter(filepath.Join(t.TempDir(), "registry.db"), log)
	if err != nil {
		t.Fatalf("NewSQLiteWriter: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestRegistryContract(t *testing.T) {
	for name, f := range map[string]registryFactory{"memory": memoryFactory, "sqlite": sqliteFactory} {
		t.Run(name, func(t *testing.T) { runRegistryContract(t, f) })
	}
}

// testContainerID returns a deterministic 64-hex container id.
func testContainerID(n int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("container-%d", n)))
	return fmt.Sprintf("%x", sum)
}

func testEntry(t testing.TB, n int, project, agent string) Entry {
	t.Helper()
	name, err := auth.NewAgentName(agent)
	if err != nil {
		t.Fatal(err)
	}
	proj, err := auth.NewProjectSlug(project)
	if err != nil {
		t.Fatal(err)
	}
	return Entry{
		AgentName:    name,
		Project:      proj,
		ContainerID:  testContainerID(n),
		Thumbprint:   sha256.Sum256([]byte(fmt.Sprintf("cert-%d", n))),
		RegisteredAt: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC).Add(time.Duration(n) * time.Second),
	}
}

func runRegistryContract(t *testing.T, newReg registryFactory) {
	t.Run("add lookup evict", func(t *testing.T) {
		r := newReg(t, logger.Nop())
		e := testEntry(t, 1, "proj", "alpha")
		if err := r.Add(e); err != nil {
			t.Fatalf("Add: %v", err)
		}
		got, err := r.LookupByContainerID(e.ContainerID)
		if err != nil {
			t.Fatalf("Lookup: %v", err)
		}
		if got.ContainerID != e.ContainerID || got.Thumbprint != e.Thumbprint || got.AgentName != e.AgentName ||
			got.Project != e.Project || !got.RegisteredAt.Equal(e.RegisteredAt) {
			t.Fatalf("Lookup = %+v, want %+v", got, e)
		}
		if !got.LastSeen.Equal(e.RegisteredAt) {
			t.Fatalf("LastSeen = %v, want default RegisteredAt %v", got.LastSeen, e.RegisteredAt)
		}
		if err := r.EvictByContainerID(e.ContainerID); err != nil {
			t.Fatalf("Evict: %v", err)
		}
		if _, err := r.LookupByContainerID(e.ContainerID); !errors.Is(err, ErrUnknownAgent) {
			t.Fatalf("Lookup after evict: %v, want ErrUnknownAgent", err)
		}
		if err := r.EvictByContainerID(e.ContainerID); err != nil {
			t.Fatalf("second Evict must be a no-op: %v", err)
		}
	})
	t.Run("lookup unknown", func(t *testing.T) {
		r := newReg(t, logger.Nop())
		got, err := r.LookupByContainerID(testContainerID(99))
		if got != nil || !errors.Is(err, ErrUnknownAgent) {
			t.Fatalf("Lookup = %v, %v; want nil, ErrUnknownAgent", got, err)
		}
	})
	t.Run("lookup returns a copy", func(t *testing.T) {
		r := newReg(t, logger.Nop())
		e := testEntry(t, 1, "", "alpha")
		if err := r.Add(e); err != nil {
			t.Fatal(err)
		}
		got, _ := r.LookupByContainerID(e.ContainerID)
		got.Thumbprint[0] ^= 0xff
		again, _ := r.LookupByContainerID(e.ContainerID)
		if again.Thumbprint != e.Thumbprint {
			t.Fatal("mutating a returned entry changed the registry")
		}
	})
	t.Run("unique container_id and thumbprint", func(t *testing.T) {
		r := newReg(t, logger.Nop())
		e := testEntry(t, 1, "p", "a")
		if err := r.Add(e); err != nil {
			t.Fatal(err)
		}
		sameID := testEntry(t, 2, "p", "b")
		sameID.ContainerID = e.ContainerID
		if err := r.Add(sameID); !errors.Is(err, errDuplicateEntry) {
			t.Fatalf("Add same container_id: %v, want errDuplicateEntry", err)
		}
		sameThumb := testEntry(t, 3, "p", "c")
		sameThumb.Thumbprint = e.Thumbprint
		if err := r.Add(sameThumb); !errors.Is(err, errDuplicateEntry) {
			t.Fatalf("Add same thumbprint: %v, want errDuplicateEntry", err)
		}
		snap, err := r.Snapshot()
		if err != nil || len(snap) != 1 {
			t.Fatalf("Snapshot = %v, %v; want the one original row", snap, err)
		}
	})
	t.Run("add validates", func(t *testing.T) {
		for name, mut := range map[string]func(*Entry){
			"zero thumbprint":     func(e *Entry) { e.Thumbprint = [32]byte{} },
			"empty container id":  func(e *Entry) { e.ContainerID = "" },
			"short container id":  func(e *Entry) { e.ContainerID = "abc123" },
			"zero agent name":     func(e *Entry) { e.AgentName = auth.AgentName{} },
			"zero registered at":  func(e *Entry) { e.RegisteredAt = time.Time{} },
			"uppercase container": func(e *Entry) { e.ContainerID = "A" + e.ContainerID[1:] },
		} {
			t.Run(name, func(t *testing.T) {
				r := newReg(t, logger.Nop())
				e := testEntry(t, 1, "p", "a")
				mut(&e)
				if err := r.Add(e); err == nil {
					t.Fatal("Add accepted an invalid entry")
				}
				if snap, _ := r.Snapshot(); len(snap) != 0 {
					t.Fatalf("invalid entry was stored: %v", snap)
				}
			})
		}
	})
	t.Run("snapshot sorted by project then agent", func(t *testing.T) {
		r := newReg(t, logger.Nop())
		in := []Entry{
			testEntry(t, 1, "zeta", "a"),
			testEntry(t, 2, "alpha", "b"),
			testEntry(t, 3, "", "z"),
			testEntry(t, 4, "alpha", "a"),
			testEntry(t, 5, "", "b"),
		}
		for _, e := range in {
			if err := r.Add(e); err != nil {
				t.Fatal(err)
			}
		}
		snap, err := r.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range snap {
			got = append(got, auth.AgentFullName(e.Project, e.AgentName))
		}
		want := []string{"clawker.b", "clawker.z", "clawker.alpha.a", "clawker.alpha.b", "clawker.zeta.a"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("Snapshot order = %v, want %v", got, want)
		}
	})
	t.Run("empty snapshot is non-nil", func(t *testing.T) {
		r := newReg(t, logger.Nop())
		snap, err := r.Snapshot()
		if err != nil || snap == nil || len(snap) != 0 {
			t.Fatalf("Snapshot = %#v, %v", snap, err)
		}
	})
	t.Run("concurrent adds", func(t *testing.T) {
		r := newReg(t, logger.Nop())
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := range 20 {
			wg.Go(func() { errs <- r.Add(testEntry(t, i, "p", fmt.Sprintf("a%d", i))) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		snap, err := r.Snapshot()
		if err != nil || len(snap) != 20 {
			t.Fatalf("Snapshot has %d rows (%v), want 20", len(snap), err)
		}
	})
	t.Run("add logs audit event", func(t *testing.T) {
		var buf bytes.Buffer
		r := newReg(t, logger.New(&buf, "debug", "test"))
		if err := r.Add(testEntry(t, 1, "p", "a")); err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(buf.Bytes(), []byte(`"event":"registry_add"`)) {
			t.Fatalf("no registry_add log line: %s", buf.String())
		}
	})
}
