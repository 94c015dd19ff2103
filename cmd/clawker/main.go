// Command clawker is the clawker CLI. See internal/cli.
package main

import (
	"os"

	"github.com/clawker/clawker/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
