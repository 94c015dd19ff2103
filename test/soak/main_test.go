package soak

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv"
)

const (
	testLabel = consts.LabelTest + "=soak"
	// agentImage is the busybox image the suite imports.
	agentImage = "clawker-soak-busybox:latest"
	// envSoak selects the long mode when set to "long".
	envSoak = "CLAWKER_SOAK"
)

// suite is the state TestMain prepares for every test.
var suite struct {
	skip   string // non-empty: why every test skips
	binDir string
	docker *mobyclient.Client
	env    *testenv.Suite
}

// long reports whether CLAWKER_SOAK=long asked for the long mode.
func long() bool { return os.Getenv(envSoak) == "long" }

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	s, err := testenv.Setup(context.Background(), "soak", agentImage)
	if errors.Is(err, testenv.ErrUnavailable) && !testenv.Required() {
		suite.skip = err.Error()
		return m.Run()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v (CLAWKER_E2E=1 makes a missing engine a failure)\n", err)
		return 1
	}
	defer s.Close(context.Background())
	// tokenprobe replays an assertion from inside an agent container.
	build := exec.Command("go", "build", "-o", s.Bin("tokenprobe"), "./test/soak/internal/tokenprobe")
	build.Dir = testenv.ModuleRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "soak: build tokenprobe: %v\n%s", err, out)
		return 1
	}
	suite.env, suite.binDir, suite.docker = s, s.BinDir, s.Docker
	return m.Run()
}

func requireSuite(t *testing.T) {
	t.Helper()
	if suite.skip != "" {
		t.Skip(suite.skip)
	}
}

// sweep removes every object carrying the soak label and the fixed-name CP
// container, keeping the agent image.
func sweep(ctx context.Context) { suite.env.Sweep(ctx, true) }
