// Command clawkerd is PID 1 of every agent container; see package clawkerd.
package main

import (
	"os"

	"github.com/clawker/clawker/clawkerd"
)

func main() {
	os.Exit(clawkerd.Main(os.Args[1:], os.Stderr))
}
