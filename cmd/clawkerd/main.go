// Command clawkerd is PID 1 of every agent container; see package clawkerd.
// It is multi-call: `clawkerd credential <op>` is git's credential helper
// inside the agent (see clawkerd.CredentialHelper), and `clawkerd
// proxy-connect HOST PORT` is ssh's ProxyCommand through the egress
// gateway (see package proxyconnect), and `clawkerd install DIR` is an
// agent pod's init container. None touches the PID 1 path.
package main

import (
	"context"
	"os"

	"github.com/clawker/clawker/clawkerd"
	"github.com/clawker/clawker/internal/egress/proxyconnect"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "credential":
			os.Exit(clawkerd.CredentialHelper(os.Args[2:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
		case "install":
			os.Exit(clawkerd.Install(os.Args[2:], os.Stderr))
		case "proxy-connect":
			os.Exit(proxyconnect.Run(context.Background(), os.Args[2:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
		}
	}
	os.Exit(clawkerd.Main(os.Args[1:], os.Stderr))
}
