package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv"
)

// TestDemoCommand runs the README's demo command verbatim
// (./scripts/demo.sh) with a fresh CLAWKER_HOME, checks it ends with both
// agents registered and initialised, then runs its teardown.
func TestDemoCommand(t *testing.T) {
	e := newEnv(t)
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	if _, err := exec.LookPath("docker"); err != nil {
		testenv.Unavailable(t, "the demo script uses the docker CLI to import its image; not installed")
	}
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "demo.sh"), args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), consts.EnvHome+"="+e.home, "CLAWKER_LABELS="+testLabel)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("demo.sh %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := run()
	table := out[strings.LastIndex(out, "== clawker agents"):]
	for _, agent := range []string{"alpha", "beta"} {
		ok := false
		for _, line := range strings.Split(table, "\n") {
			f := strings.Fields(line)
			if len(f) >= 7 && f[0] == agent && f[1] == "demo" && f[3] == "yes" && f[4] == "yes" && f[5] == "connected" && f[6] == "completed" {
				ok = true
			}
		}
		if !ok {
			t.Errorf("demo output does not show %s registered and initialised:\n%s", agent, table)
		}
	}
	run("--down")
}
