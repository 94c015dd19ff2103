package version

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestMakefileStampReachesBinaries builds clawker with the -X flag exactly
// as the Makefile spells it and checks `clawker version` prints the stamp,
// so a moved Version variable cannot silently leave releases saying "dev".
func TestMakefileStampReachesBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`-X (\S+)=\$\(VERSION\)`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("Makefile build has no -X ...=$(VERSION) flag")
	}
	bin := filepath.Join(t.TempDir(), "clawker")
	build := exec.Command("go", "build", "-ldflags", "-X "+string(m[1])+"=v9.9.9-stamp", "-o", bin, "./cmd/clawker")
	build.Dir = "../.."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != "clawker v9.9.9-stamp" {
		t.Fatalf("clawker version = %q, want the stamped version", got)
	}
}

// TestControlPlaneDoesNotLinkTheCLI keeps clawker-cp free of the CLI and
// cobra, the reason this package exists.
func TestControlPlaneDoesNotLinkTheCLI(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "./cmd/clawker-cp")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "github.com/clawker/clawker/internal/cli" || strings.HasPrefix(dep, "github.com/spf13/cobra") {
			t.Fatalf("clawker-cp links %s", dep)
		}
	}
}
