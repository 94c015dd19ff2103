// Command clawker-kube is the clawker CLI for agents on Kubernetes;
// `clawker --runtime kubernetes` runs it. It is its own binary so that
// client-go's start-up cost stays out of clawker's Docker commands.
package main

import (
	"os"

	"github.com/clawker/clawker/internal/cli"
	"github.com/clawker/clawker/internal/kubecli"
)

func main() {
	os.Exit(cli.MainRuntime(&kubecli.Runtime{}, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
