// Command clawkerd is PID 1 of every agent container; see package clawkerd.
// Called as `clawkerd credential <op>` it is git's credential helper
// inside the agent instead (multi-call; see clawkerd.CredentialHelper).
package main

import (
	"os"

	"github.com/clawker/clawker/clawkerd"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "credential" {
		os.Exit(clawkerd.CredentialHelper(os.Args[2:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
	}
	os.Exit(clawkerd.Main(os.Args[1:], os.Stderr))
}
