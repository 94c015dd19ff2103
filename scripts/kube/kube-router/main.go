// Command kube-router runs kube-router's network policy controller for the
// local cluster. The bridge CNI plugin does not enforce NetworkPolicy; with
// only --run-firewall, kube-router turns NetworkPolicy objects into
// iptables/ipset rules on the node and does nothing else.
//
// This is the minimal glue around kube-router's own packages (flags,
// --cleanup-config, run); profiling and BGP related code paths of the
// upstream main are left out.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/cloudnativelabs/kube-router/v2/pkg/cmd"
	"github.com/cloudnativelabs/kube-router/v2/pkg/options"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
)

func main() {
	klog.InitFlags(nil)
	config := options.NewKubeRouterConfig()
	config.AddFlags(pflag.CommandLine)
	pflag.Parse()
	// klog's flags live on the standard flag set: parse it (empty) so that
	// klog treats it as parsed, then apply the verbosity kube-router parsed.
	_ = flag.CommandLine.Parse(nil)
	_ = flag.Set("logtostderr", "true")
	_ = flag.Set("v", config.VLevel)

	if config.HelpRequested {
		pflag.Usage()
		return
	}
	if config.CleanupConfig {
		// Removes every iptables chain and ipset kube-router made; exits.
		cmd.CleanupConfigAndExit()
		return
	}
	kr, err := cmd.NewKubeRouterDefault(config)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-router: %v\n", err)
		os.Exit(1)
	}
	if err := kr.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "kube-router: %v\n", err)
		os.Exit(1)
	}
}
