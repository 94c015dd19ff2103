// Command kube is a multi-call binary bundling the Kubernetes components that
// scripts/kube-up.sh runs: kube-apiserver, kube-controller-manager,
// kube-scheduler, kubelet, kube-proxy and kubectl.
//
// Linking the Kubernetes dependency tree once instead of six times saves most
// of the link time of a cold build. The component is chosen by the name the
// binary is invoked as (a symlink called "kubectl", say) or, failing that, by
// the first argument ("kube kubectl get pods"). It also carries cri-reset, a
// small teardown helper used by scripts/kube-down.sh (see crireset.go).
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	_ "time/tzdata" // CronJob time zone support, as in the upstream mains

	"github.com/spf13/cobra"

	_ "k8s.io/client-go/plugin/pkg/client/auth" // kubectl auth plugins
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

// Each entry mirrors the main() of the upstream command of the same name.
var components = map[string]func() int{
	"kube-apiserver":          func() int { return cli.Run(apiserver.NewAPIServerCommand()) },
	"kube-controller-manager": func() int { return cli.Run(controllermanager.NewControllerManagerCommand()) },
	"kube-scheduler":          func() int { return cli.Run(scheduler.NewSchedulerCommand()) },
	"kubelet":                 func() int { return cli.Run(kubelet.NewKubeletCommand(context.Background())) },
	"kube-proxy":              func() int { return cli.Run(proxy.NewProxyCommand()) },
	"kubectl":                 runKubectl,
	// Not a Kubernetes component: a teardown helper for kube-down.sh.
	"cri-reset": runCRIReset,
}

func runKubectl() int {
	// Upstream sets the verbosity before building the command so that klog
	// works while plugins and .kuberc are handled.
	logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) //nolint:errcheck
	var command *cobra.Command = kubectlcmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		kubectlutil.CheckErr(err)
	}
	return 0
}

func main() {
	name := filepath.Base(os.Args[0])
	if _, ok := components[name]; !ok && len(os.Args) > 1 {
		// "kube kubelet --flags": drop our own name so that the component
		// (cobra reads os.Args[1:]) sees exactly the arguments meant for it.
		name = os.Args[1]
		os.Args = append([]string{name}, os.Args[2:]...)
	}
	run, ok := components[name]
	if !ok {
		names := make([]string, 0, len(components))
		for n := range components {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "usage: kube COMPONENT [flags...]  (or invoke through a symlink)\ncomponents: %v\n", names)
		os.Exit(2)
	}
	os.Exit(run())
}
