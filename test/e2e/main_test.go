package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv"
)

const (
	testLabel = consts.LabelTest + "=e2e"
	// agentImage is the busybox image the suite imports.
	agentImage = "clawker-e2e-busybox:latest"
)

// suite is the state TestMain prepares for every test.
var suite struct {
	skip   string // non-empty: why every test skips
	binDir string
	docker *mobyclient.Client
	env    *testenv.Suite
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	s, err := testenv.Setup(context.Background(), "e2e", agentImage)
	if errors.Is(err, testenv.ErrUnavailable) && !testenv.Required() {
		suite.skip = err.Error()
		return m.Run()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v (CLAWKER_E2E=1 makes a missing engine a failure)\n", err)
		return 1
	}
	defer s.Close(context.Background())
	suite.env, suite.binDir, suite.docker = s, s.BinDir, s.Docker
	return m.Run()
}

func requireSuite(t *testing.T) {
	t.Helper()
	if suite.skip != "" {
		t.Skip(suite.skip)
	}
}
