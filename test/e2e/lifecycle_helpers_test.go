package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"
)

// evt is one `clawker events -o json` line.
type evt struct {
	Time        time.Time         `json:"time"`
	Name        string            `json:"name"`
	Agent       string            `json:"agent"`
	Project     string            `json:"project"`
	ContainerID string            `json:"container_id"`
	Fields      map[string]string `json:"fields"`
}

// parseEvents decodes JSON event lines, keeping those for container id
// (all of them when id is empty). Non-JSON lines are ignored.
func parseEvents(lines []string, id string) []evt {
	var out []evt
	for _, l := range lines {
		var ev evt
		if json.Unmarshal([]byte(l), &ev) != nil || ev.Name == "" {
			continue
		}
		if id == "" || ev.ContainerID == id {
			out = append(out, ev)
		}
	}
	return out
}

// events returns the parsed events a running `events -f -o json` has
// printed so far for container id.
func (b *bg) events(id string) []evt {
	b.mu.Lock()
	lines := append([]string(nil), b.lines...)
	b.mu.Unlock()
	return parseEvents(lines, id)
}

// replay runs a non-follow `events --since 1h -o json`: everything the CP's
// bus still buffers, for every container.
func (e *env) replay() []evt {
	e.t.Helper()
	r := e.must("events", "--since", "1h", "-o", "json")
	return parseEvents(strings.Split(r.stdout, "\n"), "")
}

// forContainer keeps the events of container id.
func forContainer(evs []evt, id string) []evt {
	var out []evt
	for _, ev := range evs {
		if ev.ContainerID == id {
			out = append(out, ev)
		}
	}
	return out
}

// named keeps the events called name.
func named(evs []evt, name string) []evt {
	var out []evt
	for _, ev := range evs {
		if ev.Name == name {
			out = append(out, ev)
		}
	}
	return out
}

// names lists the event names in order.
func names(evs []evt) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.Name
	}
	return out
}

// stepsStarted lists the StepName of every init_step_started, in order.
func stepsStarted(evs []evt) []string {
	var out []string
	for _, ev := range named(evs, "init_step_started") {
		out = append(out, ev.Fields["StepName"])
	}
	return out
}

// indexOf is the position of the first event called name, or -1.
func indexOf(evs []evt, name string) int {
	for i, ev := range evs {
		if ev.Name == name {
			return i
		}
	}
	return -1
}

// projectDir writes a clawker.yaml holding the given hooks (name → one
// script line per element) and returns its directory.
func projectDir(t *testing.T, hooks map[string][]string) string {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("hooks:\n")
	for name, lines := range hooks {
		b.WriteString("  " + name + ": |\n")
		for _, l := range lines {
			b.WriteString("    " + l + "\n")
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "clawker.yaml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// stopContainer is `docker stop` with a short grace period.
func stopContainer(t *testing.T, id string) {
	t.Helper()
	grace := 10
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := suite.docker.ContainerStop(ctx, id, mobyclient.ContainerStopOptions{Timeout: &grace}); err != nil {
		t.Fatalf("stop %s: %v", id, err)
	}
}

// startContainer is `docker start`.
func startContainer(t *testing.T, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := suite.docker.ContainerStart(ctx, id, mobyclient.ContainerStartOptions{}); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
}

// lineCount counts the non-empty lines of a file in the container.
func lineCount(t *testing.T, id, path string) int {
	t.Helper()
	n := 0
	for _, l := range strings.Split(string(containerFile(t, id, path)), "\n") {
		if strings.TrimSpace(l) != "" {
			n++
		}
	}
	return n
}

// sameSteps compares two step-name lists.
func sameSteps(got, want []string) error {
	if strings.Join(got, ",") != strings.Join(want, ",") {
		return fmt.Errorf("steps %v, want %v", got, want)
	}
	return nil
}

// cmdRuns counts the log lines that are exactly marker: the user CMD's
// own output, not clawkerd's log line quoting its argv.
func cmdRuns(t *testing.T, id, marker string) int {
	t.Helper()
	n := 0
	for _, l := range strings.Split(containerLogs(t, id), "\n") {
		if strings.TrimSpace(l) == marker {
			n++
		}
	}
	return n
}
