package cli

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/internal/auth"
)

func TestRuntimeArg(t *testing.T) {
	t.Setenv(EnvRuntime, "")
	for _, tc := range []struct {
		args     []string
		want     string
		wantRest []string
	}{
		{[]string{"--runtime=kubernetes", "agents"}, "kubernetes", []string{"agents"}},
		{[]string{"--home", "/h", "--runtime", "k8s", "rm", "dev"}, "k8s", []string{"--home", "/h", "rm", "dev"}},
		{[]string{"-n", "agents", "--context", "c", "--runtime", "kubernetes", "agents"}, "kubernetes", []string{"-n", "agents", "--context", "c", "agents"}},
		// After the command name it is the command's (run's CMD here).
		{[]string{"run", "--agent", "x", "img", "--runtime", "kubernetes"}, "", []string{"run", "--agent", "x", "img", "--runtime", "kubernetes"}},
		{[]string{"--", "--runtime=kubernetes"}, "", []string{"--", "--runtime=kubernetes"}},
	} {
		got, rest, err := runtimeArg(tc.args)
		if err != nil || got != tc.want || !slices.Equal(rest, tc.wantRest) {
			t.Errorf("runtimeArg(%q) = %q %q %v; want %q %q", tc.args, got, rest, err, tc.want, tc.wantRest)
		}
	}
	t.Setenv(EnvRuntime, "kubernetes")
	if got, _, _ := runtimeArg([]string{"agents"}); got != "kubernetes" {
		t.Fatalf("$%s ignored: %q", EnvRuntime, got)
	}
	if _, _, err := runtimeArg([]string{"--runtime"}); exitCode(err) != ExitUsage {
		t.Fatalf("--runtime without a value: %v", err)
	}
	var out, errb bytes.Buffer
	if code := Main([]string{"--runtime", "podman", "agents"}, strings.NewReader(""), &out, &errb); code != ExitUsage ||
		!strings.Contains(errb.String(), `unknown --runtime "podman"`) {
		t.Fatalf("unknown runtime: exit %d, %q", code, errb.String())
	}
	// The kubernetes binary refuses to serve another runtime.
	errb.Reset()
	rt := &kubeNamed{}
	if code := MainRuntime(rt, []string{"--runtime", "docker", "agents"}, strings.NewReader(""), &out, &errb); code != ExitUsage ||
		!strings.Contains(errb.String(), "use clawker for docker") {
		t.Fatalf("clawker-kube --runtime docker: exit %d, %q", code, errb.String())
	}
}

// kubeNamed is a runtime named kubernetes that does nothing.
type kubeNamed struct{ fakeRuntime }

func (kubeNamed) Name() string { return "kubernetes" }

// fakeRuntime is the runtime boundary: a CP at addr and fixed workloads.
type fakeRuntime struct {
	addr      string
	workloads []Workload
	released  int
}

func (f *fakeRuntime) Name() string            { return "fake" }
func (f *fakeRuntime) AddFlags(*pflag.FlagSet) {}
func (f *fakeRuntime) AdminAddr(context.Context) (string, func(), error) {
	return f.addr, func() { f.released++ }, nil
}
func (f *fakeRuntime) Workloads(context.Context, string, bool) ([]Workload, error) {
	return f.workloads, nil
}
func (f *fakeRuntime) Exited(context.Context, string) (int, bool) { return 0, false }
func (f *fakeRuntime) Commands(Host) []*cobra.Command {
	return []*cobra.Command{{Use: "run", RunE: func(*cobra.Command, []string) error { return nil }}}
}

// On another runtime the shared commands reach the CP through the
// runtime's address, take states from its workloads, and never ask Docker.
func TestAgentsOnAnotherRuntime(t *testing.T) {
	t.Setenv(EnvCPAdminAddr, "")
	home := initHome(t)
	an, _ := auth.NewAgentName("up")
	w1, w2 := strings.Repeat("a", 64), strings.Repeat("b", 64)
	rt := &fakeRuntime{
		addr:      serveAdmin(t, home, []agent.Entry{{AgentName: an, ContainerID: w1, Thumbprint: [32]byte{1}, RegisteredAt: time.Now(), LastSeen: time.Now()}}),
		workloads: []Workload{{ID: w1, Agent: "up", State: "running"}, {ID: w2, Agent: "stray", State: "created"}},
	}
	dockerCalls := 0
	run := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		a := &app{in: strings.NewReader(""), out: &out, errOut: &errb, now: time.Now, rt: rt,
			newDocker: func() (dockerAPI, error) { dockerCalls++; return nil, context.Canceled }}
		code := a.run(context.Background(), append([]string{"--home", home}, args...))
		return out.String(), errb.String(), code
	}
	out, errOut, code := run("agents", "-a", "--format", "{{.Agent}} {{.State}} {{.Registered}}")
	if code != 0 || out != "up running true\nstray created false\n" {
		t.Fatalf("agents -a: exit %d %q\n%s", code, errOut, out)
	}
	if dockerCalls != 0 || rt.released != 1 {
		t.Fatalf("docker asked %d times, admin address released %d times; want 0 and 1", dockerCalls, rt.released)
	}
	if _, errOut, code := run("logs", "up"); code != ExitUsage || !strings.Contains(errOut, "not available on the fake runtime") {
		t.Fatalf("logs: exit %d %q", code, errOut)
	}
	if dockerCalls != 0 {
		t.Fatal("a Docker-only command asked Docker on another runtime")
	}
}
